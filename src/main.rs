//! The `vic` command line: argument parsing, files, the terminal and exit codes.
//! Everything else is a call into the library's pure phases.
#![allow(clippy::disallowed_methods)]

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vic::check::CheckOptions;
use vic::diag::{Code, Diagnostic, Severity};
use vic::driver::{self, Emit};
use vic::{io, render};

mod lsp;
mod run;

#[derive(Parser)]
#[command(
    name = "vic",
    version,
    about = "Check, format, compile and train variational-inference model specs (.vi files)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check specs statically; exit 0 when no errors, 1 when any, 2 on a usage or I/O error.
    Check {
        /// The .vi files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// How to print diagnostics: for people (standard error), one JSON object per line,
        /// GitHub workflow annotations, or one SARIF 2.1.0 log (standard output).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Override a const (`--set Z=16`) or a train setting, written as in the spec
        /// (`--set train.epochs=2`), checked by the spec's rules.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
    },
    /// Rewrite specs in canonical form (comments kept); `vic fmt -` formats standard input
    /// to standard output.
    Fmt {
        /// The .vi files to format, or `-` for standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 when a file would change.
        #[arg(long)]
        check: bool,
    },
    /// Print the AST, the typed IR (RON), the inference plan, or a Graphviz picture.
    Compile {
        /// The .vi file.
        file: PathBuf,
        /// What to print.
        #[arg(long, value_enum, default_value_t = EmitArg::Ir)]
        emit: EmitArg,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Override a const (`--set Z=16`) or a train setting (`--set train.epochs=2`).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
    },
    /// Explain an error or warning code, e.g. `vic explain E004`.
    Explain {
        /// A code such as E004 or W001.
        code: String,
    },
    /// Train a spec with a progress bar; writes the run directory. All output goes to
    /// standard error (`vic train ... 2> train.log` keeps it).
    Train {
        /// The .vi file.
        file: PathBuf,
        /// A built-in dataset name or a data file (relative to the current directory),
        /// instead of the spec's `train.dataset`.
        #[arg(long)]
        dataset: Option<String>,
        /// The run directory (default: runs/<spec name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a const (`--set Z=16`) or a train setting, written as in the spec
        /// (`--set train.epochs=2`, `--set train.lr=5e-4`), checked by the spec's rules.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
        /// cpu, cuda or cuda:N (default: the spec's `train.device`).
        #[arg(long)]
        device: Option<String>,
        /// Continue an interrupted run from its last checkpoint (also with more epochs or
        /// another learning rate).
        #[arg(long)]
        resume: bool,
    },
    /// Evaluate a trained run on its test split: ELBO, IWAE bound, reconstruction.
    Eval {
        /// The run directory `vic train` wrote.
        run: PathBuf,
        /// Evaluate on another dataset (a built-in name or a file).
        #[arg(long)]
        dataset: Option<String>,
        /// Importance samples of the IWAE bound (default: the spec's `train.eval`).
        #[arg(long)]
        samples: Option<usize>,
        /// Evaluate on the first N test examples only.
        #[arg(long)]
        examples: Option<usize>,
        /// Also refine the guide's Normal sites K gradient steps per example (as
        /// `@refine` does) and report the amortization gap, ELBO refined − ELBO at the
        /// encoder's output.
        #[arg(long, value_name = "K")]
        refine: Option<usize>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw from a trained model: a PNG grid for image data, .npy otherwise.
    Sample {
        /// The run directory `vic train` wrote.
        run: PathBuf,
        /// How many draws (per exemplar, at most 16, for a model that reads a context set).
        #[arg(short = 'n', default_value_t = 64)]
        n: usize,
        /// Where to write: a .png grid or a .npy array (default: RUN/sample.png, or
        /// RUN/sample.npy for data that is no image; RUN/steps.png with --steps).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Draw how each sample builds up: one row per sample, one column per step of the
        /// sequence the observation reads (DRAW's canvas).
        #[arg(long)]
        steps: bool,
        /// Draw from member K of the `meta` family: its `@per_member` copies, and for a
        /// model that reads a context set, exemplars from its test split.
        #[arg(long, value_name = "K")]
        member: Option<usize>,
        /// Exemplars to condition a model that reads a context set on: a .npy of
        /// `[E, ...]` or a .png of one; each row of the grid shows one, then its draws.
        #[arg(long, value_name = "FILE")]
        given: Option<PathBuf>,
    },
    /// Posterior means of the latents of every example, as given (no binarization), the
    /// training split then the test split.
    Encode {
        /// The run directory `vic train` wrote.
        run: PathBuf,
        /// Encode another dataset (a built-in name or a file).
        #[arg(long)]
        dataset: Option<String>,
        /// A .npy of the means `[examples, values]`, or a .npz that also holds each row's
        /// `index` in its split, its `split` (0 training, 1 test) and the dataset's
        /// `labels` where it has them.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Plot a run's metrics.csv as PNG: the bound, the test ELBO and the exact log p(x)
    /// against the step, with `alternate` phases shaded.
    Plot {
        /// The run directory `vic train` wrote.
        run: PathBuf,
        /// The PNG to write (default: RUN/metrics.png).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Linear-probe accuracy of the guide's posterior means: a logistic regression fitted
    /// on each held-out member's training examples and scored on its test split (a run
    /// without `meta`: its own splits).
    Probe {
        /// The run directory `vic train` wrote.
        run: PathBuf,
        /// Probe on another dataset (a built-in name or a file).
        #[arg(long)]
        dataset: Option<String>,
        /// Training examples embedded per member (its first ones).
        #[arg(long, default_value_t = 10_000)]
        examples: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print vic's manual page (roff): `vic man > vic.1`.
    Man,
    /// A language server over standard input and output: diagnostics as you type,
    /// hover, go to definition, formatting and completion (docs/editors.md).
    Lsp,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
    Github,
    Sarif,
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitArg {
    Ast,
    Ir,
    Plan,
    Dot,
}

/// Exit statuses of section 12.
pub(crate) const OK: u8 = 0;
pub(crate) const FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;

fn main() -> ExitCode {
    io::keep_candle_elementwise_on_caller();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check {
            files,
            format,
            deny_warnings,
            overrides,
        } => cmd_check(&files, format, deny_warnings, overrides),
        Command::Fmt { files, check } => cmd_fmt(&files, check),
        Command::Compile {
            file,
            emit,
            output,
            overrides,
        } => cmd_compile(&file, emit, output.as_deref(), overrides),
        Command::Explain { code } => cmd_explain(&code),
        Command::Train {
            file,
            dataset,
            out,
            overrides,
            device,
            resume,
        } => io::run_on_pool(|| run::train(&file, dataset, out, &overrides, device, resume)),
        Command::Eval {
            samples: Some(0), ..
        }
        | Command::Eval {
            examples: Some(0), ..
        } => {
            eprintln!("vic: --samples and --examples take at least 1");
            USAGE
        }
        Command::Eval {
            run,
            dataset,
            samples,
            examples,
            refine,
            json,
        } => io::run_on_pool(|| run::eval(&run, dataset, samples, examples, refine, json)),
        Command::Sample { n: 0, .. } => {
            eprintln!("vic: -n 0 draws nothing: give at least 1");
            USAGE
        }
        Command::Sample {
            output: Some(ref o),
            ..
        } if !matches!(o.extension().and_then(|e| e.to_str()), Some("png" | "npy")) => {
            eprintln!(
                "vic: -o {}: `vic sample` writes a PNG grid (.png) or a NumPy array (.npy)",
                o.display()
            );
            USAGE
        }
        Command::Sample {
            run,
            n,
            output,
            steps,
            member,
            given,
        } => io::run_on_pool(|| {
            let from = run::SampleFrom { member, given };
            if steps {
                run::sample_steps(&run, n, output, &from)
            } else {
                run::sample(&run, n, output, &from)
            }
        }),
        Command::Encode {
            run,
            dataset,
            output,
        } => io::run_on_pool(|| run::encode(&run, dataset, &output)),
        Command::Plot { run, output } => run::plot(&run, output),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vic", &mut std::io::stdout());
            OK
        }
        Command::Lsp => lsp::serve(),
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => {
                    let _ = std::io::stdout().write_all(&out);
                    OK
                }
                Err(e) => {
                    eprintln!("vic: {e}");
                    USAGE
                }
            }
        }
        Command::Probe { examples: 0, .. } => {
            eprintln!("vic: --examples 0 leaves the probe nothing to fit: give at least 1");
            USAGE
        }
        Command::Probe {
            run,
            dataset,
            examples,
            json,
        } => io::run_on_pool(|| run::probe(&run, dataset, examples, json)),
    };
    ExitCode::from(code)
}

fn use_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Print diagnostics of one file in the chosen format.
pub(crate) fn report(path: &Path, src: &str, diags: &[Diagnostic], format: Format) {
    let name = path.display().to_string();
    match format {
        Format::Human => {
            let text = if use_color() {
                render::human_colored(&name, src, diags)
            } else {
                render::human(&name, src, diags)
            };
            eprint!("{text}");
        }
        Format::Json => print!("{}", render::json(&name, src, diags)),
        Format::Github => print!("{}", render::github(&name, src, diags)),
        Format::Sarif => print!(
            "{}",
            render::sarif(&[(name, src.to_string(), diags.to_vec())])
        ),
    }
}

fn cmd_check(files: &[PathBuf], format: Format, deny_warnings: bool, overrides: Vec<String>) -> u8 {
    let opts = match CheckOptions::from_sets(&overrides) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let (mut errors, mut warnings, mut io_failed) = (0usize, 0usize, false);
    let mut sarif = Vec::new();
    for path in files {
        let src = match io::read_source(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vic: {e}");
                io_failed = true;
                continue;
            }
        };
        let front = driver::front_end(&src, &opts);
        if matches!(format, Format::Sarif) {
            sarif.push((
                path.display().to_string(),
                src.clone(),
                front.diagnostics.clone(),
            ));
        } else {
            report(path, &src, &front.diagnostics, format);
        }
        errors += front
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        warnings += front
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
    }
    if matches!(format, Format::Sarif) {
        print!("{}", render::sarif(&sarif));
    }
    if matches!(format, Format::Human) {
        let files_word = if files.len() == 1 { "file" } else { "files" };
        eprintln!(
            "vic: checked {} {files_word}: {errors} error{}, {warnings} warning{}",
            files.len(),
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        );
    }
    if io_failed {
        USAGE
    } else if errors > 0 || (deny_warnings && warnings > 0) {
        FAILED
    } else {
        OK
    }
}

fn cmd_fmt(files: &[PathBuf], check: bool) -> u8 {
    if files.iter().any(|f| f.as_os_str() == "-") {
        if files.len() > 1 {
            eprintln!("vic: `vic fmt -` formats standard input alone");
            return USAGE;
        }
        let mut src = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut src) {
            eprintln!("vic: cannot read standard input: {e}");
            return USAGE;
        }
        return match driver::format(&src) {
            Ok(f) if check => {
                if f == src {
                    OK
                } else {
                    println!("<stdin> would be reformatted");
                    FAILED
                }
            }
            Ok(f) => {
                print!("{f}");
                OK
            }
            Err(d) => {
                report(Path::new("<stdin>"), &src, &[d], Format::Human);
                FAILED
            }
        };
    }
    let mut status = OK;
    for path in files {
        let src = match io::read_source(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vic: {e}");
                return USAGE;
            }
        };
        let formatted = match driver::format(&src) {
            Ok(f) => f,
            Err(d) => {
                report(path, &src, &[d], Format::Human);
                status = FAILED;
                continue;
            }
        };
        if formatted == src {
            continue;
        }
        if check {
            println!("{} would be reformatted", path.display());
            status = FAILED;
        } else if let Err(e) = io::write_atomic(path, formatted.as_bytes()) {
            eprintln!("vic: {e}");
            return USAGE;
        } else {
            eprintln!("vic: formatted {}", path.display());
        }
    }
    status
}

fn cmd_compile(file: &Path, emit: EmitArg, output: Option<&Path>, overrides: Vec<String>) -> u8 {
    let opts = match CheckOptions::from_sets(&overrides) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let src = match io::read_source(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let front = driver::front_end(&src, &opts);
    let what = match emit {
        EmitArg::Ast => Emit::Ast,
        EmitArg::Ir => Emit::Ir,
        EmitArg::Plan => Emit::Plan,
        EmitArg::Dot => Emit::Dot,
    };
    // `--emit ast` needs only a parse; every other form needs a checked program.
    let blocking = if what == Emit::Ast {
        front.ast.is_none()
    } else {
        front.has_errors()
    };
    if !front.diagnostics.is_empty() {
        report(file, &src, &front.diagnostics, Format::Human);
    }
    if blocking {
        return FAILED;
    }
    let Some(mut text) = driver::emit(&front, what) else {
        eprintln!(
            "vic: internal compiler error: could not serialize the output; please report this"
        );
        return FAILED;
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    match output {
        Some(path) => match io::write_atomic(path, text.as_bytes()) {
            Ok(()) => OK,
            Err(e) => {
                eprintln!("vic: {e}");
                USAGE
            }
        },
        None => {
            let mut out = std::io::stdout().lock();
            if out.write_all(text.as_bytes()).is_err() {
                return USAGE;
            }
            OK
        }
    }
}

fn cmd_explain(code: &str) -> u8 {
    match Code::parse(code) {
        Some(c) => {
            print!("{}", vic::explain::full(c));
            OK
        }
        None => {
            let known: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
            eprintln!(
                "vic: unknown code `{code}`; known codes: {}",
                known.join(", ")
            );
            USAGE
        }
    }
}
