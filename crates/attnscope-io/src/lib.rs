//! attnscope-io: what a run writes — Parquet tables, safetensors files, atomic run directories, the
//! manifest, and captures turned into tables, written sequence by sequence.

pub mod manifest;
pub mod outputs;
pub mod parquet_read;
pub mod parquet_table;
pub mod run_dir;
pub mod run_writer;
pub mod tables;
pub mod tensors;
pub mod tensors_stream;

pub use parquet_read::read_parquet;
pub use parquet_table::{Column, ColumnData, ParquetWriter, Table, write_parquet};
pub use run_dir::{RunDir, host_name, remove_partial_runs, write_json, write_json_atomic};
pub use run_writer::RunWriter;
pub use tensors::{NamedTensor, TensorData, TensorView, write_safetensors};
pub use tensors_stream::SafetensorsWriter;
