//! The test harness shared by the explainer's API tests: a server on
//! loopback over a real embedded store, and image/request helpers.
#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use camshaft_explainer::{Config, serve_with_metrics};
use camshaft_proto::MAX_MESSAGE_BYTES;
use camshaft_proto::v1::explainer_client::ExplainerClient;
use camshaft_proto::v1::{ExplainMethod, ExplainRequest, ImageInput};
use camshaft_store::{EmbeddedConfig, EmbeddedStore, Store};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization};
use tonic::transport::Channel;

pub struct Cluster {
    pub client: ExplainerClient<Channel>,
    pub channel: Channel,
    pub store: Arc<dyn Store>,
    pub metrics_addr: SocketAddr,
    /// The server's address (gRPC and HTTP).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<camshaft_explainer::Result<()>>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(config: Config) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store")))
                .await
                .unwrap(),
        );
        Cluster::start_on(config, store, dir).await
    }

    /// A second server over the same store (a fresh engine and cache).
    pub async fn beside(&self, config: Config) -> Cluster {
        Cluster::start_on(
            config,
            Arc::clone(&self.store),
            tempfile::tempdir().unwrap(),
        )
        .await
    }

    async fn start_on(config: Config, store: Arc<dyn Store>, dir: tempfile::TempDir) -> Cluster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with_metrics(
            config,
            Arc::clone(&store),
            listener,
            Some(metrics),
            async {
                let _ = stopped.await;
            },
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = ExplainerClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Cluster {
            client,
            channel,
            store,
            metrics_addr,
            addr,
            stop: Some(stop),
            server,
            dir,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new client on the shared channel.
    pub fn client(&self) -> ExplainerClient<Channel> {
        self.client.clone()
    }

    /// Registers `model`'s weights as a new version of `name`.
    pub async fn register_model(&self, name: &str, model: &Model) -> Vec<u8> {
        let path = self.dir.path().join(format!("{name}-upload.safetensors"));
        camshaft_vision::save_weights(model, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        self.store
            .register_model(
                name,
                serde_json::to_value(model.spec()).unwrap(),
                serde_json::json!({}),
                bytes.clone().into(),
            )
            .await
            .unwrap();
        bytes
    }

    /// The metrics endpoint's text.
    pub async fn scrape(&self) -> String {
        camshaft_metrics::scrape(self.metrics_addr).await.unwrap()
    }

    /// The value of the sample whose line starts with `name` and contains
    /// every one of `labels` (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_value(&self.scrape().await, name, labels)
    }

    /// Registers a random-init ResNet18 (64 px, 2 classes) with `head`;
    /// returns the weights bytes.
    pub async fn register(&self, name: &str, head: Head) -> Vec<u8> {
        let spec = spec(head);
        let model = Model::new(spec.clone(), tch::Device::Cpu).unwrap();
        let path = self.dir.path().join(format!("{name}.safetensors"));
        camshaft_vision::save_weights(&model, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        self.store
            .register_model(
                name,
                serde_json::to_value(&spec).unwrap(),
                serde_json::json!({}),
                bytes.clone().into(),
            )
            .await
            .unwrap();
        bytes
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap().unwrap();
    }
}

pub fn spec(head: Head) -> ModelSpec {
    ModelSpec {
        arch: Arch::Resnet18,
        head,
        class_names: vec!["cat".into(), "dog".into()],
        input_size: 64,
        normalization: Normalization::Imagenet,
    }
}

pub fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(3).wrapping_add(seed),
            (y as u8).wrapping_mul(5),
            seed.wrapping_mul(7) ^ (x as u8),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn input(id: &str, data: Vec<u8>) -> ImageInput {
    ImageInput {
        id: id.into(),
        data: data.into(),
        target_class: None,
    }
}

pub fn request(model: &str, images: Vec<ImageInput>, method: ExplainMethod) -> ExplainRequest {
    ExplainRequest {
        model: model.into(),
        images,
        method: method as i32,
        ..Default::default()
    }
}

/// The value of the sample of `text` named `name` with all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A real decompression bomb: a valid PNG of `width`×`height` 16-bit RGBA
/// pixels, all zero (a black, transparent image), whose IDAT is one
/// fixed-Huffman deflate block of 258-byte copies: about 1.6 MB at
/// 5657×5657, decoding to 256 MB of pixels. Every decoder accepts it.
pub fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let raw = u64::from(height) * (1 + u64::from(width) * 8);
    let mut bits = BitWriter::default();
    // zlib header: deflate, 32 KiB window, no dictionary, check bits.
    bits.out.extend_from_slice(&[0x78, 0x01]);
    bits.bits(1, 1); // BFINAL
    bits.bits(1, 2); // BTYPE 01: fixed Huffman codes
    bits.huffman(0x30, 8); // literal 0
    let mut left = raw - 1;
    while left >= 258 {
        bits.huffman(0xC0 + 5, 8); // length code 285: 258 bytes
        bits.huffman(0, 5); // distance code 0: 1 byte back
        left -= 258;
    }
    for _ in 0..left {
        bits.huffman(0x30, 8);
    }
    bits.huffman(0, 7); // end of block
    let mut idat = bits.finish();
    // Adler-32 of `raw` zero bytes: a = 1, b = raw (mod 65521).
    let adler = ((raw % 65521) << 16) | 1;
    idat.extend_from_slice(&(adler as u32).to_be_bytes());
    png_with(width, height, 16, 6, &idat)
}

/// A PNG whose IHDR declares `width`×`height` at `bit_depth` and
/// `color_type`, with a tiny IDAT that cannot hold that many pixels: a
/// header bomb of a few dozen bytes (decoding fails after the header).
pub fn png_claiming(width: u32, height: u32, bit_depth: u8, color_type: u8) -> Vec<u8> {
    png_with(
        width,
        height,
        bit_depth,
        color_type,
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    )
}

fn png_with(width: u32, height: u32, bit_depth: u8, color_type: u8, idat: &[u8]) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", idat);
    chunk(b"IEND", &[]);
    out
}

/// Deflate's bit order: values least significant bit first, Huffman codes
/// most significant bit first.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn huffman(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.bits(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Registers `weights` as a new version of `name` with the spec `spec`
/// (any JSON: the store does not check it against the weights).
pub async fn register_raw(
    store: &Arc<dyn Store>,
    name: &str,
    spec: serde_json::Value,
    weights: Vec<u8>,
) {
    store
        .register_model(name, spec, serde_json::json!({}), weights.into())
        .await
        .unwrap();
}

/// Polls `what` on the metrics endpoint until `done` holds for its value
/// (at most a minute).
pub async fn wait_for_metric(
    c: &Cluster,
    name: &str,
    labels: &[&str],
    done: impl Fn(f64) -> bool,
) -> f64 {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = c.metric(name, labels).await;
        if done(v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "{name} {labels:?} stayed at {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
