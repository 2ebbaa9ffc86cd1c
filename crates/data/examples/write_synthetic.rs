//! Writes the synthetic shapes data set as PNG folders, to look at or to train on
//! from other tools:
//!
//! ```text
//! cargo run -p camshaft-data --example write_synthetic -- OUT_DIR [NUM_CLASSES] [TRAIN_LEN] [VALID_LEN] [SEED] [IMAGE_SIZE]
//! ```
//!
//! Layout: `OUT_DIR/{train,valid}/<shape>/<index>.png` plus `boxes.csv` per split.

use std::path::PathBuf;
use std::process::ExitCode;

use camshaft_data::{SyntheticConfig, write_folder};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        eprintln!(
            "usage: write_synthetic OUT_DIR [NUM_CLASSES] [TRAIN_LEN] [VALID_LEN] [SEED] [IMAGE_SIZE]"
        );
        return ExitCode::from(2);
    };
    let number = |i: usize, default: u64| -> Result<u64, String> {
        match args.get(i) {
            Some(text) => text
                .parse()
                .map_err(|_| format!("argument {i} ({text:?}) is not a number")),
            None => Ok(default),
        }
    };
    let config = (|| -> Result<SyntheticConfig, String> {
        Ok(SyntheticConfig {
            num_classes: number(1, 6)? as usize,
            train_len: number(2, 1200)? as usize,
            valid_len: number(3, 300)? as usize,
            seed: number(4, 0)?,
            image_size: number(5, 64)? as u32,
        })
    })();
    let result = config.map_err(|e| e.to_string()).and_then(|config| {
        write_folder(&config, &out).map_err(|e| e.to_string())?;
        Ok(config)
    });
    match result {
        Ok(config) => {
            println!(
                "wrote {} training and {} validation images of {:?} to {}",
                config.train_len,
                config.valid_len,
                config.class_names(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
