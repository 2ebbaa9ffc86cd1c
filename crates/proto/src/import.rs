//! Splitting a blob into the messages of a chunked upload:
//! `Coordinator.ImportModel` (weights) and `WorkerLink.PutCheckpoint` /
//! `GetCheckpoint` (checkpoints).

use prost::bytes::Bytes;

use crate::v1::import_model_request::Part;
use crate::v1::{
    CheckpointHeader, CheckpointPart, ImportModelHeader, ImportModelRequest, checkpoint_part,
};

/// Chunk size of an ImportModel upload: 1 MiB, well under every message
/// limit and the size of a store chunk.
pub const IMPORT_CHUNK_BYTES: usize = 1024 * 1024;

impl ImportModelRequest {
    /// The whole ImportModel stream for `weights`: the header first (its
    /// `size_bytes` set to the length of `weights`), then chunks of at most
    /// `chunk_bytes` (0 means [`IMPORT_CHUNK_BYTES`]). The chunks share
    /// `weights`' buffer; nothing is copied.
    pub fn stream_parts(
        mut header: ImportModelHeader,
        weights: Bytes,
        chunk_bytes: usize,
    ) -> Vec<ImportModelRequest> {
        let chunk_bytes = if chunk_bytes == 0 {
            IMPORT_CHUNK_BYTES
        } else {
            chunk_bytes
        };
        header.size_bytes = weights.len() as u64;
        std::iter::once(ImportModelRequest {
            part: Some(Part::Header(header)),
        })
        .chain(chunks(&weights, chunk_bytes).map(|c| ImportModelRequest {
            part: Some(Part::Chunk(c)),
        }))
        .collect()
    }
}

impl CheckpointPart {
    /// The whole checkpoint stream for `blob`: the header first (its
    /// `size_bytes` set to the length of `blob`), then chunks of
    /// [`IMPORT_CHUNK_BYTES`], sharing `blob`'s buffer.
    pub fn stream_parts(mut header: CheckpointHeader, blob: Bytes) -> Vec<CheckpointPart> {
        header.size_bytes = blob.len() as u64;
        std::iter::once(CheckpointPart {
            part: Some(checkpoint_part::Part::Header(header)),
        })
        .chain(chunks(&blob, IMPORT_CHUNK_BYTES).map(|c| CheckpointPart {
            part: Some(checkpoint_part::Part::Chunk(c)),
        }))
        .collect()
    }
}

/// `bytes` in slices of at most `size` bytes, sharing its buffer.
fn chunks(bytes: &Bytes, size: usize) -> impl Iterator<Item = Bytes> + '_ {
    (0..bytes.len())
        .step_by(size.max(1))
        .map(move |start| bytes.slice(start..bytes.len().min(start + size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_into_header_and_chunks() {
        let weights = Bytes::from((0..=9u8).collect::<Vec<_>>());
        let parts = ImportModelRequest::stream_parts(
            ImportModelHeader {
                name: "pets".into(),
                ..Default::default()
            },
            weights.clone(),
            4,
        );
        assert_eq!(parts.len(), 4);
        let Some(Part::Header(header)) = &parts[0].part else {
            panic!("header first, got {:?}", parts[0].part);
        };
        assert_eq!(header.size_bytes, 10);
        let joined: Vec<u8> = parts[1..]
            .iter()
            .flat_map(|p| match &p.part {
                Some(Part::Chunk(c)) => c.to_vec(),
                other => panic!("chunk expected, got {other:?}"),
            })
            .collect();
        assert_eq!(joined, weights.to_vec());
        assert_eq!(
            ImportModelRequest::stream_parts(ImportModelHeader::default(), Bytes::new(), 0).len(),
            1
        );
    }
}
