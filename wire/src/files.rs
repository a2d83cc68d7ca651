//! Bodies of the registry's file-transfer endpoints (docs/REGISTRY.md, "Files"). Chunks themselves are
//! raw bytes (`application/octet-stream`), not JSON; only their metadata is here.

use serde::{Deserialize, Serialize};

/// `POST /files` body: the sender's signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFileBody {
    /// The signed manifest in its proto encoding, base64url.
    pub manifest: String,
}

/// Where a file is at the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// The sender is still uploading chunks; the recipient does not see it yet.
    Uploading,
    /// Every chunk is stored; the recipient was told and may download.
    Complete,
    /// A state this build does not know (a newer registry).
    #[serde(other)]
    Unknown,
}

/// A file as the registry describes it to its sender or recipient (`POST /files`, `GET /files/{id}`,
/// `GET /files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStatus {
    /// 32 lowercase hex digits.
    pub file_id: String,
    /// Sender's username.
    pub sender: String,
    /// Recipient's username.
    pub recipient: String,
    /// Plaintext size in bytes (from the manifest).
    pub size: u64,
    /// Bytes stored when complete (ciphertext: size plus 16 per chunk).
    pub wire_size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Number of chunks.
    pub chunk_count: u32,
    /// Chunks stored so far.
    pub stored_chunks: u32,
    /// Stored chunk indexes as inclusive `[first, last]` ranges, in order (what a resuming sender skips).
    pub stored: Vec<[u32; 2]>,
    /// Upload state.
    pub state: FileState,
    /// When the registry accepted the manifest (Unix ms).
    pub created_ms: u64,
    /// When the registry deletes it if nobody acknowledged it (Unix ms).
    pub expires_ms: u64,
    /// The signed manifest, base64url (the recipient verifies and opens it).
    pub manifest: String,
}

/// `GET /files` response: your files still on the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesResponse {
    /// Complete files sent to you, oldest first.
    pub incoming: Vec<FileStatus>,
    /// Files you sent that are not acknowledged yet (uploading or waiting), oldest first.
    pub outgoing: Vec<FileStatus>,
}

/// `PUT /files/{id}/chunks/{index}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkStored {
    /// File id.
    pub file_id: String,
    /// The chunk just stored (or found already stored with the same bytes).
    pub index: u32,
    /// Chunks stored so far.
    pub stored_chunks: u32,
    /// True once every chunk is stored (the recipient has been told).
    pub complete: bool,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    /// The recipient downloaded, verified and saved it.
    Delivered,
    /// The recipient deleted it without saving.
    Discarded,
    /// The recipient's client refused it: it failed verification (tampered, truncated, wrong keys) or the
    /// sender's identity key changed.
    Refused,
    /// The sender cancelled it.
    Cancelled,
    /// Nobody acknowledged it before the registry's time limit.
    Expired,
    /// An outcome this build does not know (a newer registry).
    #[serde(other)]
    Unknown,
}

impl FileOutcome {
    /// The outcome's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Discarded => "discarded",
            Self::Refused => "refused",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }
}

/// `POST /files/{id}/ack` body (recipient only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckFileBody {
    /// `delivered`, `discarded` or `refused`.
    pub outcome: FileOutcome,
    /// Optional short reason for the sender (at most 128 characters, no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Response of `POST /files/{id}/ack` and `DELETE /files/{id}`: the file is gone from the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileClosedResponse {
    /// File id.
    pub file_id: String,
    /// How it ended.
    pub outcome: FileOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_states_use_their_wire_names_and_tolerate_new_ones() {
        for o in [FileOutcome::Delivered, FileOutcome::Refused, FileOutcome::Expired] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.as_str()));
        }
        assert_eq!(serde_json::from_str::<FileOutcome>("\"lost\"").unwrap(), FileOutcome::Unknown);
        assert_eq!(serde_json::from_str::<FileState>("\"scanning\"").unwrap(), FileState::Unknown);
        assert!(serde_json::from_str::<AckFileBody>(r#"{"outcome":"delivered","extra":1}"#).is_err());
        let a: AckFileBody = serde_json::from_str(r#"{"outcome":"refused"}"#).unwrap();
        assert_eq!(a.reason, None);
    }
}
