//! A preallocated key/value cache with per-slot metadata. Slots are physical (the order tokens entered the
//! cache); positions are logical (what RoPE or the learned position table sees), so parallel tokens can share
//! one position. New slots are written in place: no step ever copies the cache.

use crate::Error;
use crate::Result;
use crate::config::ModelConfig;
use crate::model::backend::KvStore;
use crate::model::cpu::CpuKv;
use crate::slots::{SlotInfo, Visibility};

/// A KV cache: per-slot metadata on the host (the same for every backend) and the keys/values of every layer
/// for up to `capacity` slots in the storage of the device the model runs on (`Model::new_cache`).
#[derive(Debug)]
pub struct KvCache {
    pub kv_dim: usize,
    pub n_layers: usize,
    capacity: usize,
    slots: Vec<SlotInfo>,
    pub visibility: Visibility,
    store: Box<dyn KvStore>,
}

impl KvCache {
    /// A cache on the host (the CPU backend's storage).
    pub fn new(cfg: &ModelConfig, capacity: usize, visibility: Visibility) -> KvCache {
        KvCache::with_store(
            cfg,
            capacity,
            visibility,
            Box::new(CpuKv::new(cfg, capacity)),
        )
    }

    /// A cache whose keys and values live in `store`.
    pub fn with_store(
        cfg: &ModelConfig,
        capacity: usize,
        visibility: Visibility,
        store: Box<dyn KvStore>,
    ) -> KvCache {
        KvCache {
            kv_dim: cfg.n_kv_heads * cfg.head_dim,
            n_layers: cfg.n_layers,
            capacity,
            slots: Vec::with_capacity(capacity),
            visibility,
            store,
        }
    }

    /// A copy of the cache (an error where the device cannot copy its storage).
    pub fn try_clone(&self) -> Result<KvCache> {
        Ok(KvCache {
            kv_dim: self.kv_dim,
            n_layers: self.n_layers,
            capacity: self.capacity,
            slots: self.slots.clone(),
            visibility: self.visibility,
            store: self.store.try_clone()?,
        })
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

    /// The key/value storage, whatever device holds it.
    pub fn store(&self) -> &dyn KvStore {
        &*self.store
    }

    /// The key/value storage, mutably.
    pub fn store_mut(&mut self) -> &mut dyn KvStore {
        &mut *self.store
    }

    /// The host storage, when the cache lives on the CPU.
    pub fn host(&self) -> Option<&CpuKv> {
        self.store.as_any().downcast_ref()
    }

    /// The host storage, mutably, when the cache lives on the CPU.
    pub fn host_mut(&mut self) -> Option<&mut CpuKv> {
        self.store.as_any_mut().downcast_mut()
    }

    /// The storage as backend type `K`, with the slot metadata and visibility beside it; an error when the
    /// cache was made for another device.
    pub(crate) fn parts_mut<K: KvStore>(&mut self) -> Result<(&mut K, &[SlotInfo], Visibility)> {
        match self.store.as_any_mut().downcast_mut::<K>() {
            Some(kv) => Ok((kv, &self.slots, self.visibility)),
            None => Err(Error::input(
                "forward: the KV cache was made for another device than the model's (use Model::new_cache)",
            )),
        }
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
