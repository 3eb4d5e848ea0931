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
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Override a const: `--set Z=16`.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, i64)>,
    },
    /// Rewrite specs in canonical form (comments kept).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 when a file would change.
        #[arg(long)]
        check: bool,
    },
    /// Print the AST, the typed IR (RON), the inference plan, or a Graphviz picture.
    Compile {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = EmitArg::Ir)]
        emit: EmitArg,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_override)]
        overrides: Vec<(String, i64)>,
    },
    /// Explain an error or warning code, e.g. `vic explain E004`.
    Explain { code: String },
    /// Train a spec with a progress bar; writes the run directory.
    Train {
        file: PathBuf,
        /// A built-in dataset name or a data file, instead of the spec's `train.dataset`.
        #[arg(long)]
        dataset: Option<String>,
        /// The run directory (default: runs/<spec name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a const (`--set Z=16`) or a numeric train setting (`--set train.epochs=2`).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        overrides: Vec<String>,
        /// cpu, cuda or cuda:N (default: the spec's `train.device`).
        #[arg(long)]
        device: Option<String>,
        /// Continue an interrupted run from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Evaluate a trained run on its test split: ELBO, IWAE bound, reconstruction.
    Eval {
        run: PathBuf,
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
        run: PathBuf,
        #[arg(short = 'n', default_value_t = 64)]
        n: usize,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Draw how each sample builds up: one row per sample, one column per step of the
        /// sequence the observation reads (DRAW's canvas), to RUN/steps.png by default.
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
    /// Posterior means of the latents of every example (train split, then test split).
    Encode {
        run: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Plot a run's metrics.csv as PNG: the bound, the test ELBO and the exact log p(x)
    /// against the step, with `alternate` phases shaded (default: RUN/metrics.png).
    Plot {
        run: PathBuf,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Linear-probe accuracy of the guide's posterior means: a logistic regression fitted
    /// on each held-out member's training examples and scored on its test split (a run
    /// without `meta`: its own splits).
    Probe {
        run: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// Training examples embedded per member (its first ones).
        #[arg(long, default_value_t = 10_000)]
        examples: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
    Github,
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitArg {
    Ast,
    Ir,
    Plan,
    Dot,
}

fn parse_override(s: &str) -> Result<(String, i64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, found `{s}`"))?;
    let value: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not an integer (in `--set {s}`)"))?;
    Ok((name.trim().to_string(), value))
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
            run,
            dataset,
            samples,
            examples,
            refine,
            json,
        } => io::run_on_pool(|| run::eval(&run, dataset, samples, examples, refine, json)),
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
    }
}

fn cmd_check(
    files: &[PathBuf],
    format: Format,
    deny_warnings: bool,
    overrides: Vec<(String, i64)>,
) -> u8 {
    let opts = CheckOptions { overrides };
    let (mut errors, mut warnings, mut io_failed) = (0usize, 0usize, false);
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
        report(path, &src, &front.diagnostics, format);
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

fn cmd_compile(
    file: &Path,
    emit: EmitArg,
    output: Option<&Path>,
    overrides: Vec<(String, i64)>,
) -> u8 {
    let src = match io::read_source(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let front = driver::front_end(&src, &CheckOptions { overrides });
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
            print!("{}", c.explain());
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
