//! The parameter store: every learned tensor of a lowered model, created through candle's
//! `VarBuilder` but initialized from vic's own seeded generator (candle's CPU generator
//! cannot be seeded), or loaded from a checkpoint.

use crate::rng::Rng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A `VarBuilder` backend that registers every tensor it hands out as a trainable `Var`
/// in a `VarMap`, taking its value from `loaded` when present and otherwise drawing it
/// from vic's generator according to the layer's `Init` hint. Creation order is the
/// order lowering builds layers in, which is deterministic, so the same seed gives the
/// same initial parameters.
struct SeededBackend {
    vars: VarMap,
    rng: Arc<Mutex<Rng>>,
    loaded: Arc<HashMap<String, Tensor>>,
}

fn draw(rng: &Arc<Mutex<Rng>>, init: Init, shape: &Shape, dev: &Device) -> Result<Tensor> {
    let n = shape.elem_count();
    let mut rng = rng
        .lock()
        .map_err(|_| candle_core::Error::Msg("the parameter generator was poisoned".into()))?;
    let values: Vec<f32> = match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => rng
            .uniform_vec(n)
            .into_iter()
            .map(|u| (lo + (up - lo) * u as f64) as f32)
            .collect(),
        Init::Randn { mean, stdev } => rng
            .normal_vec(n)
            .into_iter()
            .map(|z| (mean + stdev * z as f64) as f32)
            .collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn | FanInOut::FanOut => fan.for_shape(shape).max(1),
            };
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    rng.uniform_vec(n)
                        .into_iter()
                        .map(|u| (bound * (2.0 * u as f64 - 1.0)) as f32)
                        .collect()
                }
                NormalOrUniform::Normal => rng
                    .normal_vec(n)
                    .into_iter()
                    .map(|z| (std * z as f64) as f32)
                    .collect(),
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), dev)
}

impl SimpleBackend for SeededBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self
            .vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the parameter store was poisoned".into()))?;
        if let Some(v) = vars.get(name) {
            let t = v.as_tensor();
            if t.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}` is used with shape {:?} and {:?}",
                    t.dims(),
                    s.dims()
                );
            }
            return Ok(t.clone());
        }
        let value = match self.loaded.get(name) {
            Some(t) => {
                if t.shape() != &s {
                    candle_core::bail!(
                        "the checkpoint has `{name}` with shape {:?}, but the spec needs {:?}",
                        t.dims(),
                        s.dims()
                    );
                }
                t.to_device(dev)?.to_dtype(dtype)?
            }
            None => draw(&self.rng, h, &s, dev)?.to_dtype(dtype)?,
        };
        let var = Var::from_tensor(&value)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("parameter `{name}` was requested without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .data()
            .lock()
            .map(|m| m.contains_key(name))
            .unwrap_or(false)
            || self.loaded.contains_key(name)
    }
}

/// All learned tensors of a model, by checkpoint name.
#[derive(Clone)]
pub struct ParamStore {
    pub vars: VarMap,
    rng: Arc<Mutex<Rng>>,
    loaded: Arc<HashMap<String, Tensor>>,
    device: Device,
}

impl ParamStore {
    /// A fresh store: new parameters are drawn from a generator seeded with `seed`.
    pub fn seeded(seed: u64, device: &Device) -> ParamStore {
        ParamStore {
            vars: VarMap::new(),
            rng: Arc::new(Mutex::new(Rng::seed(seed))),
            loaded: Arc::new(HashMap::new()),
            device: device.clone(),
        }
    }

    /// A store whose parameters come from a checkpoint (any missing one is an error at
    /// the end of lowering, see [`ParamStore::unused_loaded`]).
    pub fn loaded(tensors: HashMap<String, Tensor>, device: &Device) -> ParamStore {
        ParamStore {
            vars: VarMap::new(),
            rng: Arc::new(Mutex::new(Rng::seed(0))),
            loaded: Arc::new(tensors),
            device: device.clone(),
        }
    }

    /// A `VarBuilder` rooted at `prefix` (a network's or param's name).
    pub fn builder(&self, prefix: &str) -> VarBuilder<'static> {
        let backend = SeededBackend {
            vars: self.vars.clone(),
            rng: self.rng.clone(),
            loaded: self.loaded.clone(),
        };
        VarBuilder::from_backend(Box::new(backend), DType::F32, self.device.clone()).pp(prefix)
    }

    /// A tensor created by lowering itself (a `param`, stored unconstrained): taken from
    /// the checkpoint when loading, otherwise made by `make` from vic's generator.
    pub fn custom(
        &self,
        name: &str,
        shape: &[usize],
        make: impl FnOnce(&mut Rng) -> Vec<f32>,
    ) -> Result<Tensor> {
        let mut vars = self
            .vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the parameter store was poisoned".into()))?;
        if let Some(v) = vars.get(name) {
            return Ok(v.as_tensor().clone());
        }
        let value = match self.loaded.get(name) {
            Some(t) if t.dims() == shape => t.to_device(&self.device)?.to_dtype(DType::F32)?,
            Some(t) => candle_core::bail!(
                "the checkpoint has `{name}` with shape {:?}, but the spec needs {shape:?}",
                t.dims()
            ),
            None => {
                let mut rng = self.rng.lock().map_err(|_| {
                    candle_core::Error::Msg("the parameter generator was poisoned".into())
                })?;
                Tensor::from_vec(make(&mut rng), shape, &self.device)?
            }
        };
        let var = Var::from_tensor(&value)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    /// An independent generator derived from the store's (for initializers that draw
    /// their own values, such as the networks').
    pub fn fork_rng(&self) -> Result<Rng> {
        self.rng
            .lock()
            .map(|mut r| r.fork())
            .map_err(|_| candle_core::Error::Msg("the parameter generator was poisoned".into()))
    }

    /// Every parameter, sorted by name (a stable order for optimizers and checkpoints).
    pub fn named(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .vars
            .data()
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Names present in the checkpoint that the spec did not ask for.
    pub fn unused_loaded(&self) -> Vec<String> {
        let have = self
            .vars
            .data()
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut v: Vec<String> = self
            .loaded
            .keys()
            .filter(|k| !have.contains_key(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_parameters_and_loading_wins() {
        let make = |seed| {
            let store = ParamStore::seeded(seed, &Device::Cpu);
            let vb = store.builder("enc");
            let w = vb
                .get_with_hints((3, 4), "layer0.weight", Init::Uniform { lo: -1.0, up: 1.0 })
                .unwrap();
            (store, w.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (store, a) = make(3);
        let (_, b) = make(3);
        let (_, c) = make(4);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_eq!(store.named()[0].0, "enc.layer0.weight");

        let mut map = HashMap::new();
        map.insert(
            "enc.layer0.weight".to_string(),
            Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap(),
        );
        let loaded = ParamStore::loaded(map, &Device::Cpu);
        let w = loaded
            .builder("enc")
            .get_with_hints((3, 4), "layer0.weight", Init::Const(0.0))
            .unwrap();
        assert_eq!(w.sum_all().unwrap().to_scalar::<f32>().unwrap(), 12.0);
        let bad = loaded
            .builder("enc")
            .get_with_hints((4, 4), "layer1.weight", Init::Const(0.0));
        assert!(bad.is_ok());
        assert!(loaded.unused_loaded().is_empty());
    }
}
