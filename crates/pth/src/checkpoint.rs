//! The zip side: finding `data.pkl`, reading storages, and copying each
//! flattened tensor out of its storage, all charged to the read's budget.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::mem::size_of;

use zip::ZipArchive;
use zip::result::ZipError;

use crate::limits::Budget;
use crate::pickle::{self, InternedStr, Object};
use crate::strided::View;
use crate::{Error, RawTensor, ReadLimits, Result, flatten};

/// Reads the checkpoint in `reader`, which is `len` bytes long, within
/// `limits`.
pub(crate) fn read<R: Read + Seek>(
    mut reader: R,
    len: u64,
    what: &str,
    limits: &ReadLimits,
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
    let mut budget = Budget::new(what, limits.total_bytes(len));
    let mut entries = Entries {
        archive: &mut archive,
        archive_len: len,
        what,
    };

    let prefix = entries.prefix()?;
    if let Some(order) = entries.read_optional(&format!("{prefix}byteorder"), &mut budget)? {
        let order = String::from_utf8_lossy(&order).trim().to_owned();
        if order != "little" {
            return Err(Error::ByteOrder {
                what: what.to_owned(),
                byteorder: order,
            });
        }
    }
    let pkl = entries.read(&format!("{prefix}data.pkl"), None, &mut budget)?;
    let pickle = pickle::run(&pkl, what, &mut budget)?;
    drop(pkl);

    let root = &pickle.objects[pickle.root];
    if !matches!(root, Object::Dict(_)) {
        return Err(Error::NotADict {
            what: what.to_owned(),
            found: root.kind(),
        });
    }
    let named = flatten::flatten(&pickle, pickle.root, what, limits, &mut budget)?;

    // A storage may back several tensors: read it once, and keep its bytes
    // only until its last tensor has been copied out (whose copy can then
    // often take the buffer over), so peak memory stays near the model size.
    // Keys are interned, so these maps hash them in O(1) however long.
    let mut uses: HashMap<&InternedStr, usize> = HashMap::new();
    for (_, tensor) in &named {
        *uses.entry(&tensor.storage.key).or_default() += 1;
    }
    let mut storages: HashMap<&InternedStr, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(named.len());
    for (key, tensor) in named {
        let bad_tensor = |message| Error::BadTensor {
            what: what.to_owned(),
            key: key.clone(),
            message,
        };
        let storage = &tensor.storage;
        let storage_key = &storage.key;
        let elem = storage.dtype.size();
        if !storages.contains_key(storage_key) {
            let entry = format!("{prefix}data/{}", &**storage_key);
            let expected = storage.numel.checked_mul(elem as u64).ok_or_else(|| {
                bad_tensor(format!("storage of {} elements overflows", storage.numel))
            })?;
            let bytes = entries.read(&entry, Some(expected), &mut budget)?;
            storages.insert(storage_key, bytes);
        }
        let remaining = uses.get_mut(storage_key).map_or(0, |n| {
            *n -= 1;
            *n
        });
        let Some(bytes) = storages.remove(storage_key) else {
            return Err(bad_tensor("its storage was not read".to_owned()));
        };
        let view = View::new(
            bytes.len(),
            elem,
            tensor.offset,
            &tensor.shape,
            &tensor.stride,
        )
        .map_err(bad_tensor)?;
        if view.is_expanded() && view.len() as u64 > limits.max_expanded_tensor_bytes {
            return Err(Error::ExpandedTooLarge {
                what: what.to_owned(),
                key,
                span: view.span_bytes() as u64,
                asked: view.len() as u64,
                allowed: limits.max_expanded_tensor_bytes,
            });
        }
        // The last view of a storage that is the whole storage in order
        // takes its buffer over: nothing new to allocate.
        let takes_over = remaining == 0 && view.is_whole();
        let copied = if takes_over { 0 } else { view.len() };
        let shape_bytes = tensor.shape.len() * size_of::<usize>();
        budget.charge((copied + shape_bytes) as u64, || format!("tensor {key}"))?;
        let data = if remaining == 0 {
            view.gather_owned(bytes)
        } else {
            let data = view.gather(&bytes);
            storages.insert(storage_key, bytes);
            data
        };
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

    fn read_optional(&mut self, name: &str, budget: &mut Budget<'_>) -> Result<Option<Vec<u8>>> {
        match self.read(name, None, budget) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::MissingEntry { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The bytes of entry `name`, charged to `budget` before they are read
    /// (a compressed entry may declare far more than the file holds); with
    /// `expected`, it must hold exactly that many.
    fn read(
        &mut self,
        name: &str,
        expected: Option<u64>,
        budget: &mut Budget<'_>,
    ) -> Result<Vec<u8>> {
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
        budget.charge(declared, || format!("entry {name}"))?;
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
