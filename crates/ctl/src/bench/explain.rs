//! `ctl bench explain`: images/s and latency of a running explainer under
//! concurrent clients.
//!
//! For each image set (the `--images` files, or generated JPEGs of each
//! `--size`) and each client count N in `--clients`: N clients, each its
//! own gRPC connection, send `Explain` calls of `--images-per-request`
//! images in a loop, one call in flight per client, for `--warmup-seconds`
//! and then `--seconds`. Only calls that end inside the measured window
//! count ([`Tally`]); each client stops sending when it closes and the
//! point ends when the last answer is in, so the next point starts on an
//! idle explainer. RESOURCE_EXHAUSTED (a full queue) is counted and the
//! call is sent again after the server's `retry-after-ms`; other failed
//! calls are counted by code, and make the command exit 1 after the table.
//!
//! Before a set is measured, one call of it goes through with retries, so a
//! wrong model, method or image limit is one clear error (exit 4) instead
//! of a table of failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use camshaft_proto::ModelRef;
use camshaft_proto::bytes::Bytes;
use camshaft_proto::code_name;
use camshaft_proto::security::AuthChannel;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::{ExplainMethod, ExplainRequest, ImageInput};
use clap::Args;

use super::report::{self, ExplainPoint, ExplainReport};
use super::stats::Percentiles;
use super::{interrupt_flag, interrupted};
use crate::client::Servers;
use crate::console;
use crate::error::{AlreadyReported, EXIT_FAILED, EXIT_INTERRUPTED, InputError};
use crate::explain::{MAX_IMAGES_PER_REQUEST, explain_batch};

/// Distinct images generated per `--size`.
const GENERATED_IMAGES: u32 = 16;

/// Most concurrent clients (connections) one point may open.
const MAX_CLIENTS: u32 = 1024;

/// Largest `--size` generated, pixels per side.
const MAX_SIZE: u32 = 4096;

/// Fewer calls than this in a window make a point's numbers rough.
const FEW_CALLS: u64 = 10;

/// The pause after a failed call that came without a `retry-after-ms` hint.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// `ctl bench explain`.
#[derive(Clone, Debug, Args)]
pub struct ExplainBenchArgs {
    /// The model: `name` (latest), `name@alias` or `name:version`.
    #[arg(long, value_name = "REF")]
    pub model: String,
    /// Concurrent clients to measure, comma-separated; each is its own connection.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,8,32"
    )]
    pub clients: Vec<u32>,
    /// Image files (PNG or JPEG) or folders of them to send, instead of
    /// generated images; repeatable.
    #[arg(long, value_name = "FILE|DIR", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Sides of the generated JPEGs, comma-separated (default: 224,512);
    /// not with --images.
    #[arg(
        long,
        value_name = "PIXELS,...",
        value_delimiter = ',',
        conflicts_with = "images"
    )]
    pub size: Vec<u32>,
    /// cam, gradcam, gradcam++, xgradcam, layercam or hirescam (default: CAM
    /// where the head allows it, else Grad-CAM).
    #[arg(long)]
    pub method: Option<String>,
    /// Images per Explain call.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub images_per_request: u32,
    /// Also ask for the overlay PNGs (the explainer then encodes one per image).
    #[arg(long)]
    pub overlay: bool,
    /// Seconds measured per point.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds run first at each point and left out of the numbers.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub warmup_seconds: f64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a Markdown report with SVG plots into this folder.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

/// Where the images come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    /// These files, read once and sent as they are.
    Files(Vec<PathBuf>),
    /// 16 generated JPEGs of each of these sides.
    Generated(Vec<u32>),
}

/// `ctl bench explain`'s flags, checked.
#[derive(Clone, Debug)]
pub struct ExplainBench {
    /// The model reference, as given.
    pub model: String,
    /// The method; UNSPECIFIED lets the explainer choose.
    pub method: ExplainMethod,
    /// Client counts, in the order given.
    pub clients: Vec<u32>,
    /// The images.
    pub source: ImageSource,
    /// Images per call.
    pub images_per_request: u32,
    /// `--overlay`.
    pub overlay: bool,
    /// The measured window per point.
    pub seconds: Duration,
    /// The warm-up per point.
    pub warmup: Duration,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--report`.
    pub report: Option<PathBuf>,
}

fn seconds(flag: &str, value: f64, positive: bool) -> Result<Duration, InputError> {
    let ok = value.is_finite() && (value > 0.0 || (!positive && value == 0.0));
    let duration = ok
        .then(|| Duration::try_from_secs_f64(value).ok())
        .flatten();
    duration.ok_or_else(|| {
        InputError::new(format!(
            "{flag} must be a number of seconds {}, not {value}",
            if positive { "above 0" } else { "of 0 or more" }
        ))
    })
}

impl ExplainBench {
    /// Checks the flags; folders in `--images` become their image files.
    pub fn from_args(args: ExplainBenchArgs) -> Result<ExplainBench, InputError> {
        ModelRef::parse(&args.model).map_err(|e| InputError::new(e.to_string()))?;
        let method = match &args.method {
            Some(name) => ExplainMethod::from_short_name(name)
                .map_err(|e| InputError::new(format!("--method: {e}")))?,
            None => ExplainMethod::Unspecified,
        };
        if args.clients.is_empty() {
            return Err(InputError::new("--clients needs at least one client count"));
        }
        for (i, &n) in args.clients.iter().enumerate() {
            if n == 0 || n > MAX_CLIENTS {
                return Err(InputError::new(format!(
                    "--clients: a client count must be 1 to {MAX_CLIENTS}, not {n}"
                )));
            }
            if args.clients[..i].contains(&n) {
                return Err(InputError::new(format!("--clients lists {n} twice")));
            }
        }
        let per_request = args.images_per_request;
        if per_request == 0 || per_request as usize > MAX_IMAGES_PER_REQUEST {
            return Err(InputError::new(format!(
                "--images-per-request must be 1 to {MAX_IMAGES_PER_REQUEST}, not {per_request}"
            )));
        }
        let source = if args.images.is_empty() {
            let sizes = if args.size.is_empty() {
                vec![224, 512]
            } else {
                args.size
            };
            for (i, &size) in sizes.iter().enumerate() {
                if size == 0 || size > MAX_SIZE {
                    return Err(InputError::new(format!(
                        "--size: an image side must be 1 to {MAX_SIZE} pixels, not {size}"
                    )));
                }
                if sizes[..i].contains(&size) {
                    return Err(InputError::new(format!("--size lists {size} twice")));
                }
            }
            ImageSource::Generated(sizes)
        } else {
            ImageSource::Files(image_files(&args.images)?)
        };
        Ok(ExplainBench {
            model: args.model,
            method,
            clients: args.clients,
            source,
            images_per_request: per_request,
            overlay: args.overlay,
            seconds: seconds("--seconds", args.seconds, true)?,
            warmup: seconds("--warmup-seconds", args.warmup_seconds, false)?,
            json: args.json,
            report: args.report,
        })
    }
}

/// Whether `path` is named like a PNG or JPEG file.
fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

/// `--images` as files: a folder stands for its `.png`, `.jpg` and `.jpeg`
/// files (not its subfolders), sorted by name; a file stands for itself.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|e| InputError::new(format!("--images {}: {e}", path.display())))?;
        if !metadata.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .map_err(|e| InputError::new(format!("--images {}: {e}", path.display())))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_name(p))
            .collect();
        if found.is_empty() {
            return Err(InputError::new(format!(
                "--images {}: no .png, .jpg or .jpeg files in the folder",
                path.display()
            )));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// One set of images measured at every client count.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// `224×224 generated` or `12 files`.
    pub label: String,
    /// The side of generated images.
    pub size: Option<u32>,
    /// The encoded images, sent in turn.
    pub images: Vec<Bytes>,
}

/// Reads the files; each must be a PNG or JPEG by its first bytes.
fn read_files(files: &[PathBuf]) -> Result<ImageSet, InputError> {
    let images = files
        .iter()
        .map(|path| {
            let data = std::fs::read(path)
                .map_err(|e| InputError::new(format!("cannot read {}: {e}", path.display())))?;
            match image::guess_format(&data) {
                Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg) => Ok(Bytes::from(data)),
                _ => Err(InputError::new(format!(
                    "{} is not a PNG or JPEG file",
                    path.display()
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImageSet {
        label: format!(
            "{} file{}",
            images.len(),
            if images.len() == 1 { "" } else { "s" }
        ),
        size: None,
        images,
    })
}

/// `n` distinct `size`×`size` JPEGs (smooth colour gradients, different per
/// image), encoded in memory.
pub fn generated_jpegs(size: u32, n: u32) -> anyhow::Result<Vec<Bytes>> {
    (0..n)
        .map(|seed| {
            let image = image::RgbImage::from_fn(size, size, |x, y| {
                let (x, y) = (x * 255 / size, y * 255 / size);
                image::Rgb([
                    ((x + seed * 17) % 256) as u8,
                    ((y + seed * 29) % 256) as u8,
                    (((x + y) / 2 + seed * 7) % 256) as u8,
                ])
            });
            let mut out = std::io::Cursor::new(Vec::new());
            image.write_to(&mut out, image::ImageFormat::Jpeg)?;
            Ok(Bytes::from(out.into_inner()))
        })
        .collect()
}

/// The image sets of `source`, read or generated off the async threads.
async fn image_sets(source: ImageSource) -> anyhow::Result<Vec<ImageSet>> {
    tokio::task::spawn_blocking(move || match source {
        ImageSource::Files(files) => Ok(vec![read_files(&files)?]),
        ImageSource::Generated(sizes) => sizes
            .into_iter()
            .map(|size| {
                Ok(ImageSet {
                    label: format!("{size}×{size} generated"),
                    size: Some(size),
                    images: generated_jpegs(size, GENERATED_IMAGES)?,
                })
            })
            .collect(),
    })
    .await?
}

/// What one client saw of the calls that ended inside the measured window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Latency of each call answered OK, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Images explained in those calls.
    pub images: u64,
    /// Images answered with a per-image error.
    pub image_errors: u64,
    /// Failed calls by gRPC code name.
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds `other`'s calls to these.
    pub fn merge(&mut self, other: Tally) {
        self.latencies_ms.extend(other.latencies_ms);
        self.images += other.images;
        self.image_errors += other.image_errors;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }

    /// The point these calls make over a window of `seconds`.
    pub fn point(self, set: &ImageSet, clients: u32, seconds: f64) -> ExplainPoint {
        let requests = self.latencies_ms.len() as u64;
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        ExplainPoint {
            images: set.label.clone(),
            size: set.size,
            clients,
            seconds,
            requests,
            images_explained: self.images,
            image_errors: self.image_errors,
            images_per_sec: per_second(self.images),
            requests_per_sec: per_second(requests),
            latency_ms: Percentiles::of(&self.latencies_ms),
            errors: self.errors,
        }
    }
}

/// The request of a call that sends `images` from `set`, starting at `first`.
fn request(bench: &ExplainBench, set: &ImageSet, first: usize) -> ExplainRequest {
    let n = set.images.len();
    ExplainRequest {
        model: bench.model.clone(),
        images: (0..bench.images_per_request as usize)
            .map(|i| ImageInput {
                id: String::new(),
                data: set.images[(first + i) % n].clone(),
                target_class: None,
            })
            .collect(),
        method: bench.method.into(),
        return_overlay: bench.overlay,
        ..Default::default()
    }
}

/// What every client of one point shares: what to send, and when.
struct Load {
    bench: ExplainBench,
    set: ImageSet,
    clients: usize,
    /// The end of the warm-up: calls ending from here on count.
    measure_from: Instant,
    /// The end of the window: no call is sent after it, none ending later counts.
    end: Instant,
}

/// One client's loop: calls until the window closes, tallying those that
/// end inside it. Client `k` starts at image `k × images per call` and steps
/// by all clients' worth, so concurrent calls carry different images.
async fn client_loop(mut client: ExplainerClient<AuthChannel>, load: Arc<Load>, k: usize) -> Tally {
    let per_request = load.bench.images_per_request as usize;
    let mut tally = Tally::default();
    let mut next = k * per_request;
    while Instant::now() < load.end {
        let request = request(&load.bench, &load.set, next);
        let sent = Instant::now();
        let answer = client.explain(request).await;
        let done = Instant::now();
        let counted = done >= load.measure_from && done <= load.end;
        match answer {
            Ok(response) => {
                next += load.clients * per_request;
                if counted {
                    let results = response.into_inner().results;
                    let bad = results.iter().filter(|r| !r.error.is_empty()).count() as u64;
                    tally.latencies_ms.push((done - sent).as_secs_f64() * 1e3);
                    tally.images += results.len() as u64 - bad;
                    tally.image_errors += bad;
                }
            }
            Err(status) => {
                if counted {
                    *tally
                        .errors
                        .entry(code_name(status.code()).to_string())
                        .or_default() += 1;
                }
                // RESOURCE_EXHAUSTED says when to come back (honoured in
                // full, up to the window's end); other errors get a short
                // pause so a failing server is not hammered.
                let pause = camshaft_proto::retry_after(&status)
                    .unwrap_or(RETRY_PAUSE)
                    .min(load.end.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }
    tally
}

/// Measures one point: `clients` connections calling through the warm-up
/// and the window; it ends when the last call in flight is answered.
async fn measure(
    servers: &Servers,
    bench: &ExplainBench,
    set: &ImageSet,
    clients: u32,
) -> anyhow::Result<ExplainPoint> {
    // Every connection is made before the clock starts.
    let mut connections = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        connections.push(servers.explainer().await?);
    }
    let measure_from = Instant::now() + bench.warmup;
    let load = Arc::new(Load {
        bench: bench.clone(),
        set: set.clone(),
        clients: clients as usize,
        measure_from,
        end: measure_from + bench.seconds,
    });
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(k, client)| tokio::spawn(client_loop(client, Arc::clone(&load), k)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await?);
    }
    Ok(tally.point(set, clients, bench.seconds.as_secs_f64()))
}

/// One call of `set` through, with retries while the explainer is busy or
/// loading; returns the version that answered.
async fn first_call(
    servers: &Servers,
    bench: &ExplainBench,
    set: &ImageSet,
) -> anyhow::Result<String> {
    let mut client = servers.explainer().await?;
    let response = explain_batch(&mut client, request(bench, set, 0)).await?;
    if let Some(bad) = response.results.iter().find(|r| !r.error.is_empty()) {
        eprintln!(
            "note: the explainer refused an image of {}: {}",
            set.label, bad.error
        );
    }
    Ok(response.model_version)
}

/// `ctl bench explain`.
pub async fn run(servers: &Servers, bench: ExplainBench) -> anyhow::Result<()> {
    let mut interrupt = interrupt_flag();
    tokio::select! {
        result = run_points(servers, &bench) => result,
        () = interrupted(&mut interrupt) => {
            eprintln!("\ninterrupted");
            Err(AlreadyReported { code: EXIT_INTERRUPTED }.into())
        }
    }
}

async fn run_points(servers: &Servers, bench: &ExplainBench) -> anyhow::Result<()> {
    let sets = image_sets(bench.source.clone()).await?;
    let mut model_version = String::new();
    let mut points = Vec::new();
    for set in &sets {
        model_version = first_call(servers, bench, set).await?;
        for &clients in &bench.clients {
            let point = measure(servers, bench, set, clients).await?;
            eprintln!(
                "  {}, {clients} client{}: {:.1} images/s, {} calls, errors {}",
                set.label,
                if clients == 1 { "" } else { "s" },
                point.images_per_sec,
                point.requests,
                point.errors_text()
            );
            if point.requests < FEW_CALLS {
                eprintln!(
                    "note: only {} call{} ended inside the {} s window; \
                     the numbers are rough — raise --seconds",
                    point.requests,
                    if point.requests == 1 { "" } else { "s" },
                    point.seconds
                );
            }
            points.push(point);
        }
    }
    let report = ExplainReport {
        model: bench.model.clone(),
        model_version,
        method: match bench.method {
            ExplainMethod::Unspecified => "default".into(),
            method => method.short_name().into(),
        },
        images_per_request: bench.images_per_request,
        overlay: bench.overlay,
        seconds: bench.seconds.as_secs_f64(),
        warmup_seconds: bench.warmup.as_secs_f64(),
        points,
    };
    console::line(report.workload())?;
    console::text(report.table())?;
    if let Some(path) = &bench.json {
        report::write_json(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &bench.report {
        let markdown = report::write_explain_report(dir, &report)?;
        eprintln!("wrote {}", markdown.display());
    }
    let failed: u64 = report.points.iter().map(ExplainPoint::failed_calls).sum();
    if failed > 0 {
        eprintln!(
            "{failed} call{} failed (see ERRORS)",
            if failed == 1 { "" } else { "s" }
        );
        return Err(AlreadyReported { code: EXIT_FAILED }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bench::BenchCommand;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(args: &[&str]) -> Result<ExplainBenchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["ctl", "bench", "explain"].iter().chain(args))?;
        let Command::Bench(BenchCommand::Explain(args)) = cli.command else {
            panic!("bench explain expected");
        };
        Ok(args)
    }

    fn bench(list: &[&str]) -> Result<ExplainBench, String> {
        ExplainBench::from_args(args(list).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_flags() {
        let b = bench(&["--model", "pets@prod"]).unwrap();
        assert_eq!(b.clients, [1, 8, 32]);
        assert_eq!(b.source, ImageSource::Generated(vec![224, 512]));
        assert_eq!(b.method, ExplainMethod::Unspecified);
        assert_eq!(
            (b.seconds, b.warmup),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
        let b = bench(&[
            "--model",
            "pets:3",
            "--clients",
            "4,2",
            "--size",
            "64",
            "--method",
            "gradcam++",
            "--images-per-request",
            "4",
            "--seconds",
            "0.5",
            "--warmup-seconds",
            "0",
        ])
        .unwrap();
        assert_eq!(b.clients, [4, 2]);
        assert_eq!(b.source, ImageSource::Generated(vec![64]));
        assert_eq!(b.method, ExplainMethod::GradCamPlusPlus);
        assert_eq!(b.images_per_request, 4);
        assert_eq!(
            (b.seconds, b.warmup),
            (Duration::from_millis(500), Duration::ZERO)
        );
    }

    #[test]
    fn bad_flags_are_input_errors() {
        let err = |list: &[&str]| {
            let mut all = vec!["--model", "m"];
            all.extend(list);
            bench(&all).unwrap_err()
        };
        assert_eq!(err(&["--clients", "1,8,1"]), "--clients lists 1 twice");
        assert!(err(&["--clients", "0"]).contains("1 to 1024"));
        assert!(err(&["--method", "lime"]).starts_with("--method: "));
        assert!(err(&["--images-per-request", "65"]).contains("1 to 64"));
        assert!(err(&["--size", "0"]).contains("--size"));
        assert!(err(&["--seconds", "0"]).contains("--seconds"));
        assert!(err(&["--warmup-seconds=-1"]).contains("--warmup-seconds"));
        assert!(err(&["--images", "/no/such/dir"]).contains("/no/such/dir"));
        assert!(bench(&["--model", "a:b:c"]).is_err());
        // Generated sizes and files do not mix.
        assert!(args(&["--model", "m", "--images", "x.png", "--size", "64"]).is_err());
    }

    #[test]
    fn folders_become_their_image_files() {
        let dir = tempfile::tempdir().unwrap();
        let jpegs = generated_jpegs(32, 2).unwrap();
        for (name, data) in [
            ("b.jpg", &jpegs[0][..]),
            ("a.JPEG", &jpegs[1][..]),
            ("notes.txt", b"x"),
        ] {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let files = image_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.JPEG", "b.jpg"]);
        let set = read_files(&files).unwrap();
        assert_eq!((set.label.as_str(), set.images.len()), ("2 files", 2));
        let not_an_image = read_files(&[dir.path().join("notes.txt")]).unwrap_err();
        assert!(
            not_an_image
                .to_string()
                .ends_with("is not a PNG or JPEG file")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(image_files(&[empty.path().to_path_buf()]).is_err());
    }

    #[test]
    fn generated_images_are_distinct_jpegs_of_the_size() {
        let jpegs = generated_jpegs(48, 3).unwrap();
        assert_eq!(jpegs.len(), 3);
        assert_ne!(jpegs[0], jpegs[1]);
        let decoded = image::load_from_memory(&jpegs[2]).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (48, 48));
    }

    #[test]
    fn tallies_merge_into_a_point() {
        let mut a = Tally {
            latencies_ms: vec![10.0, 20.0],
            images: 2,
            ..Default::default()
        };
        let mut b = Tally {
            latencies_ms: vec![30.0],
            images: 1,
            image_errors: 1,
            ..Default::default()
        };
        b.errors.insert("RESOURCE_EXHAUSTED".into(), 2);
        a.errors.insert("RESOURCE_EXHAUSTED".into(), 1);
        a.merge(b);
        let set = ImageSet {
            label: "64×64 generated".into(),
            size: Some(64),
            images: Vec::new(),
        };
        let point = a.point(&set, 2, 2.0);
        assert_eq!((point.requests, point.images_explained), (3, 3));
        assert_eq!((point.images_per_sec, point.requests_per_sec), (1.5, 1.5));
        assert_eq!(point.latency_ms.unwrap().p50, 20.0);
        assert_eq!(point.errors["RESOURCE_EXHAUSTED"], 3);
        assert_eq!((point.image_errors, point.failed_calls()), (1, 0));
    }
}
