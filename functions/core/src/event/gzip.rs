//! Inflating a log file: libdeflate for the usual file (one gzip member, inflated whole into a
//! buffer its trailer sizes), flate2's streaming decoder for everything else (several members, a
//! trailer that does not fit, damage), which also keeps the text before damage.

use std::cell::RefCell;
use std::io::Read;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_SUCCESS,
};

use super::FileError;

/// Hard cap on one decompressed log file (CloudTrail files are far smaller).
pub const MAX_DECOMPRESSED: u64 = 2 << 30;

/// Files the trailer says inflate to more than this take the streaming path: the whole-buffer
/// path allocates the trailer's size up front, and a trailer is input.
const WHOLE_MAX: usize = 256 << 20;

/// Deflate's largest expansion is 1,032:1 (a 258-byte match in under 2 bits), so a trailer that
/// claims more for its file is damage.
const DEFLATE_MAX_RATIO: usize = 1032;

/// Inflates a (multi-member) gzip file.
pub fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, FileError> {
    match gunzip_partial(compressed) {
        (out, None) => Ok(out),
        (_, Some(e)) => Err(e),
    }
}

/// Inflates what it can: a damaged or truncated stream keeps the text before the damage.
pub fn gunzip_partial(compressed: &[u8]) -> (Vec<u8>, Option<FileError>) {
    let mut out = Vec::new();
    let error = gunzip_into(compressed, &mut out);
    (out, error)
}

/// Inflates into `out` (cleared first); on damage `out` keeps the text before it.
pub(super) fn gunzip_into(compressed: &[u8], out: &mut Vec<u8>) -> Option<FileError> {
    out.clear();
    if compressed.is_empty() {
        return Some(FileError {
            error_type: "CorruptGzip",
            message: "the object is empty (0 bytes): not a gzip file".into(),
        });
    }
    if inflate_whole(compressed, out) {
        return None;
    }
    gunzip_streaming(compressed, out)
}

/// The streaming path: any number of members, and the text before damage is kept.
fn gunzip_streaming(compressed: &[u8], out: &mut Vec<u8>) -> Option<FileError> {
    out.clear();
    out.reserve(compressed.len().saturating_mul(8).min(256 << 20));
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    match decoder.take(MAX_DECOMPRESSED + 1).read_to_end(out) {
        Ok(n) if n as u64 > MAX_DECOMPRESSED => {
            out.clear();
            Some(FileError {
                error_type: "CorruptGzip",
                message: format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
            })
        }
        Ok(_) => None,
        Err(e) => Some(FileError {
            error_type: "CorruptGzip",
            message: format!("gzip: {e} (after {} readable bytes)", out.len()),
        }),
    }
}

/// A file of exactly one sound gzip member, inflated in one call: `true` when `out` holds all of
/// it. libdeflate checks the member's CRC-32 and size; the member must end where the file ends
/// (else there are more members, or trailing bytes, for the streaming path to read or report).
fn inflate_whole(compressed: &[u8], out: &mut Vec<u8>) -> bool {
    // ISIZE, the last 4 bytes: the size mod 2^32 of the last member (RFC 1952, 2.3.1).
    let Some(trailer) = compressed.last_chunk::<4>() else {
        return false;
    };
    let size = u32::from_le_bytes(*trailer) as usize;
    if size > WHOLE_MAX || size > compressed.len().saturating_mul(DEFLATE_MAX_RATIO) {
        return false;
    }
    // Inflated into spare capacity, not a zero-filled buffer: libdeflate writes every byte it
    // reports, and only those become the text.
    out.clear();
    out.reserve(size);
    let whole = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Decompressor::new();
        }
        d.as_mut().and_then(|d| d.gzip_member(compressed, &mut out.spare_capacity_mut()[..size]))
    });
    if whole != Some((compressed.len(), size)) {
        return false;
    }
    // SAFETY: libdeflate succeeded and wrote `size` bytes (its own count) from the start of the
    // spare capacity, which `reserve(size)` made at least `size` long.
    unsafe { out.set_len(size) };
    true
}

thread_local! {
    /// libdeflate's decompressor is its tables (~32 KiB), reused by every file a thread inflates.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// An owned `libdeflate_decompressor`. (The libdeflater crate's wrapper does not report how much
/// input a member used, which is how a second member is told from none.)
struct Decompressor(NonNull<libdeflate_decompressor>);

impl Decompressor {
    fn new() -> Option<Decompressor> {
        // SAFETY: no preconditions; NULL (out of memory) is checked.
        NonNull::new(unsafe { libdeflate_alloc_decompressor() }).map(Decompressor)
    }

    /// Inflates the first gzip member of `input` into `out`: (input bytes used, bytes written),
    /// or `None` for bad data or an `out` of the wrong size.
    fn gzip_member(&mut self, input: &[u8], out: &mut [MaybeUninit<u8>]) -> Option<(usize, usize)> {
        let (mut used, mut written) = (0usize, 0usize);
        // SAFETY: the decompressor is live and this thread's alone (&mut self); the pointers and
        // lengths come from slices that outlive the call; libdeflate writes at most `out.len()`
        // bytes into `out` (it reads back only bytes it wrote: deflate's matches point behind)
        // and the two counts into the locals.
        let result = unsafe {
            libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut written,
            )
        };
        (result == libdeflate_result_LIBDEFLATE_SUCCESS).then_some((used, written))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor and freed once, here.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// Inflate buffers are reused up to this size. A fresh buffer per file cost a page fault per
/// 4 KiB written (about a tenth of the copy's CPU time on one core); files are ~250 KiB inflated
/// on average, so most fit, and a rare large one is not held on to.
const KEPT_TEXT_BYTES: usize = 4 << 20;

/// How many buffers are kept: about the parsers running at once. (Not one per thread: parses run
/// on tokio's blocking pool, whose threads also serve file reads and number in the dozens.)
const KEPT_TEXTS: usize = 8;

static TEXTS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

pub(super) fn take_text_buffer() -> Vec<u8> {
    TEXTS.lock().map(|mut pool| pool.pop()).ok().flatten().unwrap_or_default()
}

pub(super) fn give_text_buffer(text: Vec<u8>) {
    if text.capacity() <= KEPT_TEXT_BYTES
        && let Ok(mut pool) = TEXTS.lock()
        && pool.len() < KEPT_TEXTS
    {
        pool.push(text);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn whole(compressed: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        inflate_whole(compressed, &mut out).then_some(out)
    }

    #[test]
    fn one_member_is_inflated_whole_and_matches_the_streaming_path() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{{\"n\":{i}}},").into_bytes()).collect();
        let file = gz(&text);
        assert_eq!(whole(&file).as_deref(), Some(&text[..]));
        let mut streamed = Vec::new();
        assert!(gunzip_streaming(&file, &mut streamed).is_none());
        assert_eq!(streamed, text);
        assert_eq!(whole(&gz(b"")).as_deref(), Some(&b""[..]));
    }

    #[test]
    fn more_than_one_member_goes_the_streaming_way() {
        // Two members of the same size: the trailer's ISIZE fits the first member too, so only
        // the input the member used tells that a second one follows.
        let (a, b) = (gz(b"first member"), gz(b"second member"));
        let same = [a.clone(), gz(b"other member")].concat();
        assert_eq!(whole(&same), None);
        assert_eq!(gunzip(&same).unwrap(), b"first memberother member");
        let two = [a, b].concat();
        assert_eq!(whole(&two), None);
        assert_eq!(gunzip(&two).unwrap(), b"first membersecond member");
    }

    #[test]
    fn a_trailer_that_lies_is_left_to_the_streaming_path() {
        let text = b"{\"Records\":[]}".repeat(1000);
        let file = gz(&text);
        let n = file.len();
        // Claims more than deflate can expand to, then one byte more than the text holds.
        for claim in [u32::MAX, text.len() as u32 + 1] {
            let mut bad = file.clone();
            bad[n - 4..].copy_from_slice(&claim.to_le_bytes());
            assert_eq!(whole(&bad), None, "{claim}");
            let (out, err) = gunzip_partial(&bad);
            assert_eq!(err.expect("a bad trailer is damage").error_type, "CorruptGzip");
            assert_eq!(out, text, "the text before the damage is kept");
        }
        // A flipped byte in the middle: libdeflate refuses it, and so does the streaming path.
        let mut bad = file.clone();
        bad[n / 2] ^= 0x55;
        assert_eq!(whole(&bad), None);
        assert_eq!(gunzip(&bad).unwrap_err().error_type, "CorruptGzip");
        // Trailing bytes after the member.
        let trailing = [file.clone(), b"junk".to_vec()].concat();
        assert_eq!(whole(&trailing), None);
    }
}
