//! The zip side: finding `data.pkl`, reading storages, flattening the
//! unpickled dict into named tensors.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};

use zip::ZipArchive;
use zip::result::ZipError;

use crate::pickle::{self, ObjId, Object, Pickle, TensorRef};
use crate::{Error, MAX_NESTING, RawTensor, Result, strided};

/// Reads the checkpoint in `reader`, which is `len` bytes long.
pub(crate) fn read<R: Read + Seek>(
    mut reader: R,
    len: u64,
    what: &str,
) -> Result<Vec<(String, RawTensor)>> {
    let mut archive = match ZipArchive::new(&mut reader) {
        Ok(archive) => archive,
        Err(source) => {
            return Err(if starts_with_pickle(&mut reader) {
                Error::LegacyFormat {
                    what: what.to_owned(),
                }
            } else {
                Error::Zip {
                    what: what.to_owned(),
                    source,
                }
            });
        }
    };
    let mut entries = Entries {
        archive: &mut archive,
        archive_len: len,
        what,
    };

    let prefix = entries.prefix()?;
    if let Some(order) = entries.read_optional(&format!("{prefix}byteorder"))? {
        let order = String::from_utf8_lossy(&order).trim().to_owned();
        if order != "little" {
            return Err(Error::ByteOrder {
                what: what.to_owned(),
                byteorder: order,
            });
        }
    }
    let pkl = entries.read(&format!("{prefix}data.pkl"), None)?;
    let pickle = pickle::run(&pkl, what)?;

    let mut named = Vec::new();
    let root = &pickle.objects[pickle.root];
    if !matches!(root, Object::Dict(_)) {
        return Err(Error::NotADict {
            what: what.to_owned(),
            found: root.kind(),
        });
    }
    flatten(&pickle, pickle.root, "", 0, what, &mut named)?;

    // A storage may back several tensors: read it once, and keep its bytes
    // only until its last tensor has been copied out (whose copy can then
    // often take the buffer over), so peak memory stays near the model size.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, tensor) in &named {
        *uses.entry(tensor.storage.key.as_str()).or_default() += 1;
    }
    let mut storages: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut tensors = Vec::with_capacity(named.len());
    for (key, tensor) in named {
        if !seen.insert(key.clone()) {
            return Err(Error::DuplicateKey {
                what: what.to_owned(),
                key,
            });
        }
        let storage = &tensor.storage;
        let storage_key = storage.key.as_str();
        let elem = storage.dtype.size();
        if !storages.contains_key(storage_key) {
            let entry = format!("{prefix}data/{storage_key}");
            let expected =
                storage
                    .numel
                    .checked_mul(elem as u64)
                    .ok_or_else(|| Error::BadTensor {
                        what: what.to_owned(),
                        key: key.clone(),
                        message: format!("storage of {} elements overflows", storage.numel),
                    })?;
            let bytes = entries.read(&entry, Some(expected))?;
            storages.insert(storage_key, bytes);
        }
        let remaining = uses.get_mut(storage_key).map_or(0, |n| {
            *n -= 1;
            *n
        });
        let (offset, shape, stride) = (tensor.offset, &tensor.shape[..], &tensor.stride[..]);
        let gathered = match storages.remove(storage_key) {
            Some(bytes) if remaining == 0 => {
                strided::gather_owned(bytes, elem, offset, shape, stride)
            }
            Some(bytes) => {
                let gathered = strided::gather(&bytes, elem, offset, shape, stride);
                storages.insert(storage_key, bytes);
                gathered
            }
            None => Err("its storage was not read".to_owned()),
        };
        let data = gathered.map_err(|message| Error::BadTensor {
            what: what.to_owned(),
            key: key.clone(),
            message,
        })?;
        tensors.push((
            key,
            RawTensor {
                dtype: storage.dtype,
                shape: tensor.shape.clone(),
                data,
            },
        ));
    }
    Ok(tensors)
}

/// Whether the stream starts with a pickle `PROTO` opcode, as the legacy
/// (pre-zip) torch.save format does.
fn starts_with_pickle<R: Read + Seek>(reader: &mut R) -> bool {
    let mut first = [0u8; 2];
    reader.seek(SeekFrom::Start(0)).is_ok()
        && reader.read_exact(&mut first).is_ok()
        && first[0] == 0x80
        && (2..=5).contains(&first[1])
}

/// Collects `(dotted key, tensor)` for every tensor under the dict `dict`.
fn flatten<'p>(
    pickle: &'p Pickle,
    dict: ObjId,
    prefix: &str,
    depth: usize,
    what: &str,
    out: &mut Vec<(String, &'p TensorRef)>,
) -> Result<()> {
    let Object::Dict(dict) = &pickle.objects[dict] else {
        return Ok(());
    };
    for &(key, value) in &dict.entries {
        let key = match &pickle.objects[key] {
            Object::Str(s) => s.clone(),
            // Optimizer state is keyed by parameter index.
            Object::Int(i) => i.to_string(),
            // A key we cannot name (a tuple, say) cannot hold a weight.
            _ => continue,
        };
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match &pickle.objects[value] {
            Object::Tensor(tensor) => out.push((key, tensor)),
            Object::Dict(_) => {
                if depth + 1 >= MAX_NESTING {
                    return Err(Error::TooDeep {
                        what: what.to_owned(),
                        key,
                    });
                }
                flatten(pickle, value, &key, depth + 1, what, out)?;
            }
            // Epoch counters, names, hyper-parameters, lists: not weights.
            _ => {}
        }
    }
    Ok(())
}

/// Reads entries of the archive, checking sizes before allocating.
struct Entries<'a, R> {
    archive: &'a mut ZipArchive<R>,
    /// Size of the whole file: no stored entry can be larger.
    archive_len: u64,
    what: &'a str,
}

impl<R: Read + Seek> Entries<'_, R> {
    /// The archive's top folder with a trailing `/` (torch names it after
    /// the file it first saved to, so it can be anything).
    fn prefix(&self) -> Result<String> {
        let candidates: Vec<&str> = self
            .archive
            .file_names()
            .filter_map(|name| {
                let folder = name.strip_suffix("data.pkl")?;
                (folder.is_empty() || folder.find('/') == Some(folder.len() - 1)).then_some(folder)
            })
            .collect();
        match candidates.as_slice() {
            [prefix] => Ok((*prefix).to_owned()),
            _ => Err(Error::DataPkl {
                what: self.what.to_owned(),
                found: candidates.len(),
            }),
        }
    }

    fn read_optional(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.read(name, None) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::MissingEntry { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The bytes of entry `name`; with `expected`, it must hold exactly
    /// that many.
    fn read(&mut self, name: &str, expected: Option<u64>) -> Result<Vec<u8>> {
        let what = self.what;
        let mut file = match self.archive.by_name(name) {
            Ok(file) => file,
            Err(ZipError::FileNotFound) => {
                return Err(Error::MissingEntry {
                    what: what.to_owned(),
                    entry: name.to_owned(),
                });
            }
            Err(source) => {
                return Err(Error::Zip {
                    what: what.to_owned(),
                    source,
                });
            }
        };
        let declared = file.size();
        if let Some(expected) = expected
            && declared != expected
        {
            return Err(Error::StorageSize {
                what: what.to_owned(),
                entry: name.to_owned(),
                expected,
                actual: declared,
            });
        }
        // The declared size is only a claim: never reserve more than the
        // whole file, nor read much past the claim. The one byte more lets
        // the zip reader reach the end of the entry, where it checks the
        // CRC.
        let capacity = usize::try_from(declared.min(self.archive_len)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        (&mut file)
            .take(declared.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| Error::ReadEntry {
                what: what.to_owned(),
                entry: name.to_owned(),
                source,
            })?;
        if bytes.len() as u64 != declared {
            return Err(Error::ReadEntry {
                what: what.to_owned(),
                entry: name.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("entry holds {} bytes, not {declared}", bytes.len()),
                ),
            });
        }
        Ok(bytes)
    }
}
