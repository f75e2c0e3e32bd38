//! A safetensors file written tensor by tensor, never holding more than one tensor in memory.
//!
//! The format puts the header (every tensor's byte range) before the data, and a run only knows a
//! sequence's tensor shapes when the sequence ends. So each appended tensor's bytes go to a hidden data
//! file beside the target (`.NAME.data`) at once; [`SafetensorsWriter::finish`] writes the header to the
//! target, copies the data file behind it (`std::io::copy`: `copy_file_range` on Linux, no buffer of the
//! whole), fsyncs the target and removes the data file. The bytes equal [`crate::write_safetensors`]'s for
//! the same tensors and metadata. Until then, the disk holds the data once; during the copy, twice.

use crate::tensors::{
    TensorEntry, check_entry, check_tensor, header_bytes, write_le, write_view_le,
};
use crate::{NamedTensor, TensorView};
use attnscope_core::Error;
use attnscope_core::Result;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A safetensors file under construction; see the module docs. Dropped unfinished, it removes its data
/// file (the target is only created by `finish`).
pub struct SafetensorsWriter {
    path: PathBuf,
    data_path: PathBuf,
    data: Option<BufWriter<File>>,
    entries: Vec<TensorEntry>,
    names: HashSet<String>,
}

impl SafetensorsWriter {
    /// Starts the file `path`: creates its data file `.NAME.data` in the same directory (an error if one is
    /// there already).
    pub fn create(path: &Path) -> Result<SafetensorsWriter> {
        let data_path = data_path_of(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(|e| Error::io(&data_path, e))?;
        Ok(SafetensorsWriter {
            path: path.to_path_buf(),
            data_path,
            data: Some(BufWriter::with_capacity(1 << 20, file)),
            entries: Vec::new(),
            names: HashSet::new(),
        })
    }

    /// Appends `tensor` after the ones before it. Errors (naming the target) like
    /// [`crate::write_safetensors`]: an empty, repeated or reserved name, or a shape that does not match
    /// the data.
    pub fn append(&mut self, tensor: &NamedTensor) -> Result<()> {
        let entry = check_tensor(&self.path, tensor, &mut self.names)?;
        let Some(data) = self.data.as_mut() else {
            return Err(Error::output(&self.path, "appended to after it failed"));
        };
        if let Err(e) = write_le(data, &tensor.data) {
            self.data = None;
            return Err(Error::io(&self.data_path, e));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Appends the tensor `name` of `shape` from borrowed elements (written as they are, little-endian,
    /// neither joined nor converted in memory). Errors like [`SafetensorsWriter::append`].
    pub fn append_view(&mut self, name: &str, shape: &[usize], data: TensorView) -> Result<()> {
        let parts = (data.len(), data.dtype(), data.elem_size());
        let entry = check_entry(&self.path, name, shape, parts, &mut self.names)?;
        let Some(out) = self.data.as_mut() else {
            return Err(Error::output(&self.path, "appended to after it failed"));
        };
        if let Err(e) = write_view_le(out, data) {
            self.data = None;
            return Err(Error::io(&self.data_path, e));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Writes the target: header (with `metadata`) and the data of every appended tensor, in order; fsyncs
    /// it and removes the data file.
    pub fn finish(mut self, metadata: &BTreeMap<String, String>) -> Result<()> {
        let header = header_bytes(&self.path, &self.entries, metadata)?;
        let data_bytes: u64 = self.entries.iter().map(|e| e.bytes as u64).sum();
        let Some(data) = self.data.take() else {
            return Err(Error::output(&self.path, "finished after it failed"));
        };
        let data_err = |e| Error::io(&self.data_path, e);
        let mut data = data.into_inner().map_err(|e| data_err(e.into_error()))?;
        data.seek(SeekFrom::Start(0)).map_err(data_err)?;

        let path = &self.path;
        let out_err = |e| Error::io(path, e);
        let mut out = File::create(path).map_err(out_err)?;
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(out_err)?;
        out.write_all(&header).map_err(out_err)?;
        let copied = std::io::copy(&mut data, &mut out).map_err(out_err)?;
        if copied != data_bytes {
            return Err(Error::output(
                path,
                format!("copied {copied} bytes of tensor data, expected {data_bytes}"),
            ));
        }
        out.sync_all().map_err(out_err)?;
        drop(data);
        std::fs::remove_file(&self.data_path).map_err(|e| Error::io(&self.data_path, e))
    }
}

impl Drop for SafetensorsWriter {
    fn drop(&mut self) {
        // After `finish` the data file is gone already and this fails quietly.
        self.data = None;
        let _ = std::fs::remove_file(&self.data_path);
    }
}

/// `.NAME.data` beside `path`.
fn data_path_of(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".data");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TensorData, write_safetensors};

    fn tensors() -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "seq0.layer1".into(),
                shape: vec![2, 2, 2],
                data: TensorData::F32Blocks(vec![vec![0.5, 0.5, 1.0, 0.0], vec![0.25; 4]]),
            },
            NamedTensor {
                name: "seq1.layer1".into(),
                shape: vec![1, 3, 3],
                data: TensorData::F16(vec![half::f16::from_f32(0.125); 9]),
            },
            NamedTensor {
                name: "empty".into(),
                shape: vec![0, 3],
                data: TensorData::F32(Vec::new()),
            },
        ]
    }

    #[test]
    fn streamed_file_equals_the_whole_file_and_leaves_no_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let meta = BTreeMap::from([("layout".to_string(), "x".to_string())]);
        let whole = dir.path().join("whole.safetensors");
        write_safetensors(&whole, &tensors(), &meta).unwrap();
        let streamed = dir.path().join("streamed.safetensors");
        let mut w = SafetensorsWriter::create(&streamed).unwrap();
        assert!(dir.path().join(".streamed.safetensors.data").exists());
        for t in tensors() {
            w.append(&t).unwrap();
        }
        w.finish(&meta).unwrap();
        assert_eq!(
            std::fs::read(&streamed).unwrap(),
            std::fs::read(&whole).unwrap()
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["streamed.safetensors", "whole.safetensors"]);
    }

    /// Borrowed slices write the bytes of the owned tensors they view.
    #[test]
    fn appended_views_equal_appended_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let meta = BTreeMap::new();
        let owned = dir.path().join("owned.safetensors");
        let mut w = SafetensorsWriter::create(&owned).unwrap();
        for t in tensors() {
            w.append(&t).unwrap();
        }
        w.finish(&meta).unwrap();
        let viewed = dir.path().join("viewed.safetensors");
        let mut w = SafetensorsWriter::create(&viewed).unwrap();
        let joined = [0.5f32, 0.5, 1.0, 0.0, 0.25, 0.25, 0.25, 0.25];
        w.append_view("seq0.layer1", &[2, 2, 2], TensorView::F32(&joined))
            .unwrap();
        let halves = [half::f16::from_f32(0.125); 9];
        w.append_view("seq1.layer1", &[1, 3, 3], TensorView::F16(&halves))
            .unwrap();
        let e = w
            .append_view("bad", &[2], TensorView::I64(&[1, 2, 3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bad`") && e.contains("shape [2]"), "{e}");
        w.append_view("empty", &[0, 3], TensorView::F32(&[]))
            .unwrap();
        w.finish(&meta).unwrap();
        assert_eq!(
            std::fs::read(&viewed).unwrap(),
            std::fs::read(&owned).unwrap()
        );
    }

    #[test]
    fn bad_tensors_are_errors_and_a_dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let mut w = SafetensorsWriter::create(&path).unwrap();
        let mut t = tensors();
        w.append(&t[0]).unwrap();
        let e = w.append(&t[0]).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("more than once"),
            "{e}"
        );
        t[1].shape = vec![2, 3, 3];
        let e = w.append(&t[1]).unwrap_err().to_string();
        assert!(e.contains("seq1.layer1") && e.contains("shape"), "{e}");
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
