//! The `.vi` sources of LANGUAGE.md (section 1, section 9 and the appendix sketches).
#![allow(dead_code)]

pub const VAE: &str = r#"# Variational autoencoder (Kingma & Welling 2013) on binarized images.
const D = 784          # pixels
const Z = 32           # latent size
const H = 512          # hidden width

data   x : Binary[D]
latent z : Real[Z]

net encoder(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H], act = relu)
net decoder(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H], act = relu)

model {                              # p(x, z) = p(z) p(x | z)
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = decoder(z))
}

guide {                              # q(z | x), amortized by `encoder`
  let (loc, scale) = encoder(x)
  z ~ Normal(loc, scale)
}

train {
  dataset   = "fashion-mnist"
  objective = elbo(samples = 1)
  optimizer = adam(lr = 1e-3)
  batch     = 128
  epochs    = 30
}
"#;

pub const META_BLOCK: &str = r#"meta {
  family  = rotate(-180:160:20)   # 18 members: the dataset rotated by each angle
  train   = even                  # members used for training
  test    = odd                   # held-out members, for evaluation only
}
"#;

pub const M2: &str = r#"data x : Binary[D]
data y : Cat(K) partial
latent z : Real[Z]
net classify(x: Binary[D]) -> Real[K] = mlp(hidden = [H], act = softplus)
net encode(x: Binary[D], y: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net decode(z: Real[Z], y: Cat(K)) -> Real[D] = mlp(hidden = [H])
model { y ~ Categorical(logits = zeros(K)); z ~ Normal(0, 1); x ~ Bernoulli(logits = decode(z, y)) }
guide { y ~ Categorical(logits = classify(x)); let (m, s) = encode(x, y); z ~ Normal(m, s) }
train { labels = 1000; supervised_weight = 0.1 }
"#;

pub const GMVAE: &str = r#"latent c : Cat(K)
net prior_z(c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = linear()
model { c ~ Categorical(logits = zeros(K)); let (m, s) = prior_z(c); z ~ Normal(m, s); x ~ Bernoulli(logits = dec(z)) }
guide { c ~ Categorical(logits = q_c(x)) @enumerate; let (m, s) = q_z(x, c); z ~ Normal(m, s) }
"#;

pub const FACTOR_ANALYSIS: &str = r#"data x : Real[D]
latent z : Real[L]
param noise : Positive[D] = 1.0
net load(z: Real[L]) -> Real[D] = linear()
model { z ~ Normal(0, 1); x ~ Normal(load(z), noise) }
guide exact
"#;

pub const IAF: &str = r#"net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z], h: Real[C]) = mlp(hidden = [H, H], act = elu)
net ar(z: Real[Z], h: Real[C]) -> (m: Real[Z], s: Real[Z]) = made(hidden = [320, 320], act = elu)
guide { let (m, s, h) = enc(x); z ~ Normal(m, s) |> iaf(ar, h, steps = 2) }
train { free_bits = 0.25 }
"#;

pub const VDROP: &str = r#"data x : Real[D] given
data y : Cat(10)
net clf(x: Real[D]) -> Real[10] = mlp(hidden = [1024, 1024], weights = vdrop(kind = "B"))
model { y ~ Categorical(logits = clf(x)) }
"#;

pub const VRNN: &str = r#"data x : Binary[T, W]
latent z : Real[T, Z]
net cell(h: Real[H], x: Binary[W], z: Real[Z]) -> Real[H] = gru()
net prior(h: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net post(h: Real[H], x: Binary[W]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net emit(h: Real[H], z: Real[Z]) -> Real[W] = mlp(hidden = [H])
model {
  let h[0] = zeros(H)
  for t in 1:T {
    let (pm, ps) = prior(h[t-1])
    z[t] ~ Normal(pm, ps)
    x[t] ~ Bernoulli(logits = emit(h[t-1], z[t]))
    let h[t] = cell(h[t-1], x[t], z[t])
  }
}
guide {
  let h[0] = zeros(H)
  for t in 1:T {
    let (qm, qs) = post(h[t-1], x[t])
    z[t] ~ Normal(qm, qs)
    let h[t] = cell(h[t-1], x[t], z[t])
  }
}
"#;

pub const DRAW: &str = r#"data x : Binary[1, 28, 28]
latent z : Real[T, Z]
net dec_cell(h: Real[H], z: Real[Z]) -> Real[H] = gru()
net enc_cell(e: Real[H], r: Real[2*N*N], h: Real[H]) -> Real[H] = gru()
net read(img: Real[2, 28, 28], h: Real[H]) -> Real[2*N*N] = attend_read(grid = N)
net write(h: Real[H]) -> Real[1, 28, 28] = attend_write(grid = N)
net q(e: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = linear()
model {
  let h[0] = zeros(H); let c[0] = zeros(1, 28, 28)
  for t in 1:T { z[t] ~ Normal(0, 1); let h[t] = dec_cell(h[t-1], z[t]); let c[t] = c[t-1] + write(h[t]) }
  x ~ Bernoulli(logits = c[T])
}
guide {
  let h[0] = zeros(H); let e[0] = zeros(H); let c[0] = zeros(1, 28, 28)
  for t in 1:T {
    let e[t] = enc_cell(e[t-1], read(concat(x, x - sigmoid(c[t-1])), h[t-1]), h[t-1])
    let (m, s) = q(e[t])
    z[t] ~ Normal(m, s)
    let h[t] = dec_cell(h[t-1], z[t]); let c[t] = c[t-1] + write(h[t])
  }
}
"#;

pub const METAVAE: &str = r#"set S : Binary[D] size 10
net summary(S: Set[Binary[D]]) -> Real[H] = deepsets(phi = [H, H], act = leaky_relu)
net enc(x: Binary[D], s: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H])
@per_member net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H])
guide { let (m, s) = enc(x, summary(S)); z ~ Normal(m, s) }
meta { family = rotate(-180:160:20); train = even; test = odd }
"#;

/// Every source, with a name for failure messages.
pub const ALL: &[(&str, &str)] = &[
    ("vae", VAE),
    ("meta_block", META_BLOCK),
    ("m2", M2),
    ("gmvae", GMVAE),
    ("factor_analysis", FACTOR_ANALYSIS),
    ("iaf", IAF),
    ("vdrop", VDROP),
    ("vrnn", VRNN),
    ("draw", DRAW),
    ("metavae", METAVAE),
];
