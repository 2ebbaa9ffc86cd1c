//! Lists the tensors of a `torch.save` checkpoint: `pth_list FILE.pth`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: pth_list FILE.pth");
        return ExitCode::FAILURE;
    };
    match camshaft_pth::read_state_dict(path.as_ref()) {
        Ok(tensors) => {
            for (name, tensor) in &tensors {
                println!("{name}\t{}\t{:?}", tensor.dtype, tensor.shape);
            }
            eprintln!("{} tensors", tensors.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
