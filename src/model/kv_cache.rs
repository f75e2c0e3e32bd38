//! A preallocated key/value cache with per-slot metadata. Slots are physical (the order tokens entered the
//! cache); positions are logical (what RoPE or the learned position table sees), so parallel tokens can share
//! one position. New slots are written in place: no step ever copies the cache.

use crate::config::ModelConfig;
use crate::cuda::DeviceKv;
use crate::slots::{SlotInfo, Visibility};

/// Keys and values of every layer for up to `capacity` slots, `[capacity, n_kv_heads * head_dim]` each.
/// On the CPU they live in `keys`/`values`; a cache made by `Model::new_cache` for a model on the GPU keeps
/// them in `device` (and `keys`/`values` stay empty). The slot metadata is the same for both.
#[derive(Debug)]
pub struct KvCache {
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
    pub kv_dim: usize,
    pub n_layers: usize,
    capacity: usize,
    slots: Vec<SlotInfo>,
    pub visibility: Visibility,
    pub device: Option<DeviceKv>,
}

impl KvCache {
    /// A copy of a host cache; a cache on the GPU is not copied (an error).
    pub fn try_clone(&self) -> crate::Result<KvCache> {
        if self.device.is_some() {
            return Err(crate::Error::cuda(
                "copying a KV cache that lives on the GPU is not supported",
            ));
        }
        Ok(KvCache {
            keys: self.keys.clone(),
            values: self.values.clone(),
            kv_dim: self.kv_dim,
            n_layers: self.n_layers,
            capacity: self.capacity,
            slots: self.slots.clone(),
            visibility: self.visibility,
            device: None,
        })
    }
}

impl KvCache {
    /// Allocates room for `capacity` slots in every layer.
    pub fn new(cfg: &ModelConfig, capacity: usize, visibility: Visibility) -> KvCache {
        let kv_dim = cfg.n_kv_heads * cfg.head_dim;
        KvCache {
            keys: (0..cfg.n_layers)
                .map(|_| vec![0.0; capacity * kv_dim])
                .collect(),
            values: (0..cfg.n_layers)
                .map(|_| vec![0.0; capacity * kv_dim])
                .collect(),
            kv_dim,
            n_layers: cfg.n_layers,
            capacity,
            slots: Vec::with_capacity(capacity),
            visibility,
            device: None,
        }
    }

    /// A cache whose keys and values live on the GPU.
    pub fn on_device(
        cfg: &ModelConfig,
        capacity: usize,
        visibility: Visibility,
        device: DeviceKv,
    ) -> KvCache {
        KvCache {
            keys: Vec::new(),
            values: Vec::new(),
            kv_dim: cfg.n_kv_heads * cfg.head_dim,
            n_layers: cfg.n_layers,
            capacity,
            slots: Vec::with_capacity(capacity),
            visibility,
            device: Some(device),
        }
    }

    /// Number of filled slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Maximum number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Metadata of the filled slots.
    pub fn slots(&self) -> &[SlotInfo] {
        &self.slots
    }

    /// Appends slot metadata; keys and values are written by the forward pass. Returns false when full.
    pub(crate) fn push_slots(&mut self, new: &[SlotInfo]) -> bool {
        if self.slots.len() + new.len() > self.capacity {
            return false;
        }
        self.slots.extend_from_slice(new);
        true
    }

    /// Marks slots as altered by an ablation (their metadata records it).
    pub(crate) fn mark_ablated(&mut self, slots: &[usize]) {
        for &s in slots {
            if let Some(info) = self.slots.get_mut(s) {
                info.ablated = true;
            }
        }
    }
}
