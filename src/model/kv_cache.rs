//! A preallocated key/value cache with per-slot metadata. Slots are physical (the order tokens entered the
//! cache); positions are logical (what RoPE or the learned position table sees), so parallel tokens can share
//! one position. New slots are written in place: no step ever copies the cache.

use crate::config::ModelConfig;
use crate::cuda::DeviceKv;
use crate::input::Visibility;
use serde::Serialize;

/// Why a slot is in the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// Given by the user (prompt text or `--input` token ids).
    Prompt,
    /// Produced by generation, one token per step.
    Generated,
    /// Produced by generation as a member of a parallel set sharing one position.
    Parallel,
}

impl SlotKind {
    /// Name used in output tables.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Prompt => "prompt",
            SlotKind::Generated => "generated",
            SlotKind::Parallel => "parallel",
        }
    }
}

/// Metadata of one cache slot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlotInfo {
    pub token: u32,
    /// Logical position (RoPE / learned position index).
    pub position: i64,
    /// Group id, −1 for none. Slots of one parallel set share a group.
    pub group: i32,
    /// 0 for the prompt, k for the k-th generation step.
    pub step: u32,
    pub kind: SlotKind,
    /// Whether the slot's keys/values were altered by an ablation.
    pub ablated: bool,
}

impl SlotInfo {
    /// A prompt slot.
    pub fn prompt(token: u32, position: i64, group: i32) -> SlotInfo {
        SlotInfo {
            token,
            position,
            group,
            step: 0,
            kind: SlotKind::Prompt,
            ablated: false,
        }
    }
}

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
