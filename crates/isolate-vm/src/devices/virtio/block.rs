//! virtio-blk over a host file or block device.
//!
//! One request queue, processed synchronously on the vCPU thread that
//! notifies it. Supported requests: `IN` (read), `OUT` (write), `FLUSH`
//! (`fdatasync`) and `GET_ID`. Every request is checked before any I/O: the
//! header must be 16 device-readable bytes, data must travel in the right
//! direction, lengths must be whole sectors and the range must lie inside the
//! disk; a request that fails a check completes with `VIRTIO_BLK_S_IOERR`
//! (or `UNSUPP` for unknown types), and a chain with no room for a status
//! byte is returned unused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::{ActiveQueue, VirtioDevice, TYPE_BLOCK, VIRTIO_F_VERSION_1};
use crate::devices::{DeviceError, Interrupt};

/// Bytes per sector in the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request announced to the driver (`seg_max`).
const SEG_MAX: u32 = 128;
/// `struct virtio_blk_outhdr`: type (u32), reserved (u32), sector (u64).
const HEADER_LEN: usize = 16;
/// Bounce buffer size for file I/O.
const IO_CHUNK: usize = 128 * 1024;
/// Size of the configuration space exposed (`struct virtio_blk_config` up to
/// the write-zeroes fields).
const CONFIG_LEN: usize = 60;

/// `bounce`, allocated on first use, cut to `len` bytes (1..=`IO_CHUNK`).
fn bounce(bounce: &mut Vec<u8>, len: u64) -> &mut [u8] {
    if bounce.is_empty() {
        *bounce = vec![0; IO_CHUNK];
    }
    let n = len.clamp(1, IO_CHUNK as u64) as usize;
    &mut bounce[..n]
}

/// The host side of the disk.
struct Disk {
    file: File,
    sectors: u64,
    read_only: bool,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// Bounce buffer between the file and guest memory, reused across requests.
    bounce: Vec<u8>,
    /// Requests completed with an error status.
    failed_requests: u64,
}

/// Outcome of one request: status byte and bytes written to guest buffers
/// before the status.
struct Completion {
    status: u8,
    data_len: u64,
}

impl Completion {
    fn ok(data_len: u64) -> Self {
        Self {
            status: VIRTIO_BLK_S_OK as u8,
            data_len,
        }
    }
    fn err(status: u32) -> Self {
        Self {
            status: status as u8,
            data_len: 0,
        }
    }
}

impl Disk {
    /// Byte offset of `sector` if `len` bytes from there lie inside the disk.
    fn check_range(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return None;
        }
        let end = sector.checked_add(len / SECTOR_SIZE)?;
        (end <= self.sectors).then(|| sector * SECTOR_SIZE)
    }

    /// Serves one request chain; returns the number of bytes written to the
    /// chain (0 if there is no room for a status byte, or the writable part
    /// leaves guest memory). `misordered`: a device-readable descriptor came
    /// after a device-writable one.
    fn serve(&mut self, mem: &GuestMemoryMmap, chain: Chain<'_>, misordered: bool) -> u32 {
        let reader = Reader::<()>::new(mem, chain.clone());
        let Ok(mut data) = Writer::<()>::new(mem, chain) else {
            return 0;
        };
        let writable = data.available_bytes();
        let Some(status_at) = writable.checked_sub(1) else {
            return 0;
        };
        let Ok(mut status) = data.split_at(status_at) else {
            return 0;
        };
        let readable = reader.as_ref().map_or(0, Reader::available_bytes);
        let done = match reader {
            Ok(mut reader) if !misordered => self.execute(&mut reader, &mut data),
            _ => Completion::err(VIRTIO_BLK_S_IOERR),
        };
        if done.status != VIRTIO_BLK_S_OK as u8 {
            self.failed_requests += 1;
            log::debug!(
                "virtio-blk: request failed with status {} (readable {readable} bytes, writable {writable}, misordered {misordered})",
                done.status,
            );
        }
        if status.write_all(&[done.status]).is_err() {
            return 0;
        }
        // Bounded by the chain length, which the virtio spec caps at u32.
        u32::try_from(done.data_len + 1).unwrap_or(u32::MAX)
    }

    /// `data`: the device-writable bytes before the status byte.
    fn execute(&mut self, reader: &mut Reader<'_>, data: &mut Writer<'_>) -> Completion {
        let mut header = [0u8; HEADER_LEN];
        if reader.read_exact(&mut header).is_err() {
            return Completion::err(VIRTIO_BLK_S_IOERR);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let readable_data = reader.available_bytes() as u64;
        let data_room = data.available_bytes() as u64;

        match kind {
            VIRTIO_BLK_T_IN => {
                // Data must be device-writable only.
                if readable_data != 0 {
                    return Completion::err(VIRTIO_BLK_S_IOERR);
                }
                match self.check_range(sector, data_room) {
                    Some(offset) => self.read_into_guest(data, offset, data_room),
                    None => Completion::err(VIRTIO_BLK_S_IOERR),
                }
            }
            VIRTIO_BLK_T_OUT => {
                // Data must be device-readable only.
                if self.read_only || data_room != 0 {
                    return Completion::err(VIRTIO_BLK_S_IOERR);
                }
                match self.check_range(sector, readable_data) {
                    Some(offset) => self.write_from_guest(reader, offset, readable_data),
                    None => Completion::err(VIRTIO_BLK_S_IOERR),
                }
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only || self.file.sync_data().is_ok() {
                    Completion::ok(0)
                } else {
                    Completion::err(VIRTIO_BLK_S_IOERR)
                }
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = data_room.min(self.id.len() as u64) as usize;
                if data.write_all(&self.id[..n]).is_ok() {
                    Completion::ok(n as u64)
                } else {
                    Completion::err(VIRTIO_BLK_S_IOERR)
                }
            }
            _ => Completion::err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    fn read_into_guest(&mut self, data: &mut Writer<'_>, offset: u64, len: u64) -> Completion {
        let buf = bounce(&mut self.bounce, len);
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            if self
                .file
                .read_exact_at(&mut buf[..n], offset + pos)
                .is_err()
                || data.write_all(&buf[..n]).is_err()
            {
                return Completion {
                    status: VIRTIO_BLK_S_IOERR as u8,
                    data_len: pos,
                };
            }
            pos += n as u64;
        }
        Completion::ok(len)
    }

    fn write_from_guest(&mut self, reader: &mut Reader<'_>, offset: u64, len: u64) -> Completion {
        let buf = bounce(&mut self.bounce, len);
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            if reader.read_exact(&mut buf[..n]).is_err()
                || self.file.write_all_at(&buf[..n], offset + pos).is_err()
            {
                return Completion::err(VIRTIO_BLK_S_IOERR);
            }
            pos += n as u64;
        }
        Completion::ok(0)
    }
}

/// A request's descriptor chain.
type Chain<'a> = virtio_queue::DescriptorChain<&'a GuestMemoryMmap>;

/// Whether a device-readable descriptor follows a device-writable one in
/// `chain` (the virtio spec puts all readable ones first, 2.7.4.2).
fn misordered(chain: &Chain<'_>) -> bool {
    let mut seen_writable = false;
    for desc in chain.clone() {
        if desc.is_write_only() {
            seen_writable = true;
        } else if seen_writable {
            return true;
        }
    }
    false
}

/// Takes an advisory lock on the whole image without waiting. Filesystems
/// without `flock` support are used unlocked.
fn lock_image(file: &File, read_only: bool, label: &str) -> Result<(), DeviceError> {
    let op = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock only reads the descriptor number, which `file` keeps
    // open for the duration of the call; it touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(DeviceError::Io {
            context: format!(
                "{label} is in use by another VM (it is locked{}); \
                 stop the other run or use another image",
                if read_only { " for writing" } else { "" }
            ),
            source: err,
        }),
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(()),
        _ => Err(DeviceError::Io {
            context: format!("cannot lock {label}"),
            source: err,
        }),
    }
}

/// The virtio block device model.
pub struct Block {
    disk: Disk,
    config: [u8; CONFIG_LEN],
    acked_features: u64,
    active: Option<ActiveQueue>,
}

impl Block {
    /// Opens `path` (read-write unless `read_only`) as a disk whose serial
    /// (`GET_ID`) is the file name.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| DeviceError::Io {
                context: format!(
                    "cannot open disk image {} {}",
                    path.display(),
                    if read_only { "read-only" } else { "read-write" }
                ),
                source,
            })?;
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("disk image {}", path.display());
        Self::from_file(file, read_only, &id, &label)
    }

    /// A disk over `file` (a regular file or a block device). Its capacity is
    /// the file size rounded down to whole 512-byte sectors. `id` is what
    /// `GET_ID` returns (truncated to 20 bytes); `read_only` offers
    /// `VIRTIO_BLK_F_RO` and fails every write.
    ///
    /// The file is locked (`flock`: shared if read-only, exclusive
    /// otherwise) for as long as the device lives, so two VMs cannot write
    /// the same image at once; a conflicting lock is an error.
    pub fn new(file: File, read_only: bool, id: &str) -> Result<Self, DeviceError> {
        Self::from_file(file, read_only, id, "the disk image")
    }

    /// [`new`](Self::new), naming the image `label` in errors.
    fn from_file(
        mut file: File,
        read_only: bool,
        id: &str,
        label: &str,
    ) -> Result<Self, DeviceError> {
        lock_image(&file, read_only, label)?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| DeviceError::Io {
                context: format!("cannot determine the size of {label}"),
                source,
            })?;
        let sectors = size / SECTOR_SIZE;
        let mut id_bytes = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = id.len().min(id_bytes.len());
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);

        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&sectors.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Self {
            disk: Disk {
                file,
                sectors,
                read_only,
                id: id_bytes,
                bounce: Vec::new(),
                failed_requests: 0,
            },
            config,
            acked_features: 0,
            active: None,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.disk.sectors
    }

    /// Requests completed with an error status (I/O error, bad request,
    /// unsupported type). At log level debug,
    /// each one is also reported on stderr.
    pub fn failed_requests(&self) -> u64 {
        self.disk.failed_requests
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.disk.read_only
    }

    fn process_queue(&mut self) {
        let Some(q) = self.active.as_mut() else {
            return;
        };
        let mut used = false;
        while let Some(chain) = q.queue.pop_descriptor_chain(&q.mem) {
            let head = chain.head_index();
            let misordered = misordered(&chain);
            let len = self.disk.serve(&q.mem, chain, misordered);
            // A head past the queue size cannot be returned: the chain is
            // dropped, and only returned chains are worth an interrupt.
            used |= q.queue.add_used(&q.mem, head, len).is_ok();
        }
        if used {
            q.notify_guest();
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        // Indirect descriptors let the driver put a whole request (up to
        // SEG_MAX data segments) in one ring slot instead of SEG_MAX + 2.
        let mut features = VIRTIO_F_VERSION_1
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC);
        if self.disk.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(avail) = self.config.get(start..) {
            let n = avail.len().min(data.len());
            data[..n].copy_from_slice(&avail[..n]);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing is writable: the writeback field needs VIRTIO_BLK_F_CONFIG_WCE.
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), DeviceError> {
        let count = queues.len();
        let mut queues = queues.into_iter();
        let (Some(queue), None) = (queues.next(), queues.next()) else {
            return Err(DeviceError::QueueNotUsable {
                device: "block",
                index: count.min(1),
                reason: "the block device needs exactly 1 queue",
            });
        };
        if !queue.ready() {
            return Err(DeviceError::QueueNotUsable {
                device: "block",
                index: 0,
                reason: "not ready",
            });
        }
        self.active = Some(ActiveQueue {
            queue,
            mem,
            interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, queue_index: u16) {
        if queue_index == 0 {
            self.process_queue();
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::test_util::{add_chain, guest_memory, used_entries, CountingIrq, Rng};

    const HDR: u64 = 0x1_0000;
    const DATA: u64 = 0x2_0000;
    const STATUS: u64 = 0x3_0000;
    const SECTORS: u64 = 8;

    /// A temp file of `SECTORS` sectors where byte i holds `i / 512 + 1`
    /// (each sector has its own value).
    fn disk_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..SECTORS * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE + 1) as u8)
            .collect();
        f.write_all(&content).unwrap();
        f
    }

    fn file_bytes(f: &tempfile::NamedTempFile) -> Vec<u8> {
        std::fs::read(f.path()).unwrap()
    }

    struct Fixture<'a> {
        block: Block,
        vq: MockSplitQueue<'a, GuestMemoryMmap>,
        irq: Arc<CountingIrq>,
        next_desc: u16,
    }

    fn fixture<'a>(
        mem: &'a GuestMemoryMmap,
        file: &tempfile::NamedTempFile,
        ro: bool,
    ) -> Fixture<'a> {
        let mut block = Block::open(file.path(), ro).unwrap();
        let vq = MockSplitQueue::create(mem, GuestAddress(0), 64);
        let irq = Arc::new(CountingIrq::default());
        block
            .activate(mem.clone(), vec![vq.create_queue().unwrap()], irq.clone())
            .unwrap();
        Fixture {
            block,
            vq,
            irq,
            next_desc: 0,
        }
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    impl Fixture<'_> {
        /// Submits one chain and returns (used length, status byte).
        fn submit(&mut self, mem: &GuestMemoryMmap, segs: &[(u64, u32, bool)]) -> (u32, u8) {
            mem.write_slice(&[0xee], GuestAddress(STATUS)).unwrap();
            add_chain(&self.vq, self.next_desc, segs);
            self.next_desc += segs.len() as u16;
            let before = used_entries(&self.vq).len();
            self.block.queue_notify(0);
            let used = used_entries(&self.vq);
            assert_eq!(used.len(), before + 1, "chain not returned");
            let mut status = [0u8];
            mem.read_slice(&mut status, GuestAddress(STATUS)).unwrap();
            (used[before].1, status[0])
        }

        fn request(
            &mut self,
            mem: &GuestMemoryMmap,
            kind: u32,
            sector: u64,
            data: Option<(u32, bool)>,
        ) -> (u32, u8) {
            header(mem, kind, sector);
            let mut segs = vec![(HDR, 16, false)];
            if let Some((len, writable)) = data {
                segs.push((DATA, len, writable));
            }
            segs.push((STATUS, 1, true));
            self.submit(mem, &segs)
        }
    }

    const OK: u8 = VIRTIO_BLK_S_OK as u8;
    const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

    #[test]
    fn reads_sectors_into_guest_buffers() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        let (len, status) = f.request(&mem, VIRTIO_BLK_T_IN, 2, Some((1024, true)));
        assert_eq!((len, status), (1025, OK));
        let mut got = vec![0u8; 1024];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, file_bytes(&file)[1024..2048]);
        assert_eq!(f.irq.count(), 1);
    }

    #[test]
    fn writes_then_reads_back_and_flushes() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let (len, status) = f.request(&mem, VIRTIO_BLK_T_OUT, 5, Some((512, false)));
        assert_eq!((len, status), (1, OK));
        assert_eq!(file_bytes(&file)[5 * 512..6 * 512], [0xab; 512]);
        assert_eq!(file_bytes(&file)[4 * 512], 5, "neighbours untouched");

        mem.write_slice(&[0; 512], GuestAddress(DATA)).unwrap();
        let (_, status) = f.request(&mem, VIRTIO_BLK_T_IN, 5, Some((512, true)));
        assert_eq!(status, OK);
        let mut got = [0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, [0xab; 512]);

        assert_eq!(f.request(&mem, VIRTIO_BLK_T_FLUSH, 0, None), (1, OK));
    }

    #[test]
    fn data_may_span_several_descriptors() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let segs = [
            (HDR, 16, false),
            (DATA, 100, true),
            (DATA + 0x1000, 924, true),
            (STATUS, 1, true),
        ];
        assert_eq!(f.submit(&mem, &segs), (1025, OK));
        let mut a = vec![0u8; 100];
        let mut b = vec![0u8; 924];
        mem.read_slice(&mut a, GuestAddress(DATA)).unwrap();
        mem.read_slice(&mut b, GuestAddress(DATA + 0x1000)).unwrap();
        a.extend(b);
        assert_eq!(a, file_bytes(&file)[..1024]);
    }

    #[test]
    fn requests_in_indirect_tables_are_served() {
        use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
        use virtio_queue::desc::split::Descriptor;

        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        assert_ne!(f.block.features() & (1 << VIRTIO_RING_F_INDIRECT_DESC), 0);
        header(&mem, VIRTIO_BLK_T_IN, 3);
        // header, two data halves, status: one table of four descriptors.
        let table = 0x4_0000u64;
        let next = VRING_DESC_F_NEXT as u16;
        let write = VRING_DESC_F_WRITE as u16;
        let descs = [
            Descriptor::new(HDR, 16, next, 1),
            Descriptor::new(DATA, 256, next | write, 2),
            Descriptor::new(DATA + 0x1000, 256, next | write, 3),
            Descriptor::new(STATUS, 1, write, 0),
        ];
        for (i, d) in descs.iter().enumerate() {
            mem.write_obj(*d, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let indirect = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
        let head = Descriptor::new(table, 64, indirect, 0);
        f.vq.desc_table()
            .store(0, virtio_queue::desc::RawDescriptor::from(head))
            .unwrap();
        f.vq.avail().ring().ref_at(0).unwrap().store(0);
        f.vq.avail().idx().store(1);

        f.block.queue_notify(0);

        assert_eq!(used_entries(&f.vq), vec![(0, 513)]);
        let mut status = [0xffu8];
        mem.read_slice(&mut status, GuestAddress(STATUS)).unwrap();
        assert_eq!(status[0], OK);
        let mut a = vec![0u8; 256];
        let mut b = vec![0u8; 256];
        mem.read_slice(&mut a, GuestAddress(DATA)).unwrap();
        mem.read_slice(&mut b, GuestAddress(DATA + 0x1000)).unwrap();
        a.extend(b);
        assert!(
            a == file_bytes(&file)[3 * 512..4 * 512],
            "sector 3 not read"
        );
    }

    #[test]
    fn get_id_returns_the_serial() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        let (len, status) = f.request(&mem, VIRTIO_BLK_T_GET_ID, 0, Some((20, true)));
        assert_eq!((len, status), (21, OK));
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        let name = file.path().file_name().unwrap().to_string_lossy();
        let expect = &name.as_bytes()[..name.len().min(20)];
        assert_eq!(&id[..expect.len()], expect);
    }

    #[test]
    fn read_only_disk_rejects_writes() {
        let mem = guest_memory();
        let file = disk_file();
        let before = file_bytes(&file);
        let mut f = fixture(&mem, &file, true);
        assert_ne!(f.block.features() & (1 << VIRTIO_BLK_F_RO), 0);
        mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let (_, status) = f.request(&mem, VIRTIO_BLK_T_OUT, 0, Some((512, false)));
        assert_eq!(status, IOERR);
        assert_eq!(file_bytes(&file), before);
        // Reads and flushes still work.
        assert_eq!(f.request(&mem, VIRTIO_BLK_T_IN, 0, Some((512, true))).1, OK);
        assert_eq!(f.request(&mem, VIRTIO_BLK_T_FLUSH, 0, None).1, OK);
    }

    #[test]
    fn out_of_range_sectors_give_ioerr() {
        let mem = guest_memory();
        let file = disk_file();
        let before = file_bytes(&file);
        let mut f = fixture(&mem, &file, false);
        for sector in [7, 8, u64::MAX / 512, u64::MAX] {
            let (_, status) = f.request(&mem, VIRTIO_BLK_T_IN, sector, Some((1024, true)));
            assert_eq!(status, IOERR, "read at sector {sector}");
            let (_, status) = f.request(&mem, VIRTIO_BLK_T_OUT, sector, Some((1024, false)));
            assert_eq!(status, IOERR, "write at sector {sector}");
        }
        assert_eq!(f.block.failed_requests(), 8);
        // The last sector itself is fine.
        assert_eq!(f.request(&mem, VIRTIO_BLK_T_IN, 7, Some((512, true))).1, OK);
        assert_eq!(file_bytes(&file), before);
    }

    #[test]
    fn partial_sectors_give_ioerr() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        assert_eq!(
            f.request(&mem, VIRTIO_BLK_T_IN, 0, Some((100, true))).1,
            IOERR
        );
        assert_eq!(
            f.request(&mem, VIRTIO_BLK_T_OUT, 0, Some((513, false))).1,
            IOERR
        );
    }

    #[test]
    fn wrong_data_direction_gives_ioerr() {
        let mem = guest_memory();
        let file = disk_file();
        let before = file_bytes(&file);
        let mut f = fixture(&mem, &file, false);
        // A read whose data buffer is device-readable.
        assert_eq!(
            f.request(&mem, VIRTIO_BLK_T_IN, 0, Some((512, false))).1,
            IOERR
        );
        // A write whose data buffer is device-writable.
        assert_eq!(
            f.request(&mem, VIRTIO_BLK_T_OUT, 0, Some((512, true))).1,
            IOERR
        );
        // A readable descriptor after a writable one.
        header(&mem, VIRTIO_BLK_T_IN, 0);
        let segs = [
            (HDR, 16, false),
            (DATA, 512, true),
            (DATA, 16, false),
            (STATUS, 1, true),
        ];
        assert_eq!(f.submit(&mem, &segs).1, IOERR);
        assert_eq!(file_bytes(&file), before);
    }

    #[test]
    fn short_header_and_unknown_type() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        header(&mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            f.submit(&mem, &[(HDR, 8, false), (STATUS, 1, true)]),
            (1, IOERR)
        );
        let (len, status) = f.request(&mem, 0x1234, 0, None);
        assert_eq!((len, status), (1, VIRTIO_BLK_S_UNSUPP as u8));
    }

    #[test]
    fn chains_without_status_room_are_returned_unused() {
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        header(&mem, VIRTIO_BLK_T_IN, 0);
        // Only a header; then a status outside guest memory.
        assert_eq!(f.submit(&mem, &[(HDR, 16, false)]).0, 0);
        assert_eq!(
            f.submit(&mem, &[(HDR, 16, false), (0x10_0000_0000, 1, true)])
                .0,
            0
        );
    }

    #[test]
    fn chains_with_a_head_past_the_queue_are_dropped_without_an_interrupt() {
        // The device takes a chain whose head lies past the queue size but
        // cannot return it: no used entry, and no interrupt for it (found
        // by the virtqueue fuzz target, fuzz/).
        let mem = guest_memory();
        let file = disk_file();
        let mut f = fixture(&mem, &file, false);
        f.vq.avail().ring().ref_at(0).unwrap().store(64);
        f.vq.avail().idx().store(1);
        f.block.queue_notify(0);
        assert_eq!(f.vq.used().idx().load(), 0);
        assert_eq!(f.irq.count(), 0, "interrupt without used buffers");
    }

    #[test]
    fn config_space_reports_capacity() {
        let file = disk_file();
        let block = Block::open(file.path(), false).unwrap();
        let mut cap = [0u8; 8];
        block.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), SECTORS);
        let mut hi = [0xffu8; 4];
        block.read_config(4, &mut hi);
        assert_eq!(hi, [0; 4]);
        let mut past = [0xffu8; 4];
        block.read_config(1000, &mut past);
        assert_eq!(past, [0; 4]);
        block.read_config(u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
    }

    #[test]
    fn a_writable_image_cannot_be_opened_twice() {
        let file = disk_file();
        let first = Block::open(file.path(), false).unwrap();
        let err = Block::open(file.path(), false).err().unwrap();
        assert!(err.to_string().contains("in use by another VM"), "{err}");
        assert!(
            err.to_string().contains(&*file.path().to_string_lossy()),
            "{err}"
        );
        assert!(Block::open(file.path(), true).is_err());
        drop(first);
        // Released with the device; readers share.
        let a = Block::open(file.path(), true).unwrap();
        let b = Block::open(file.path(), true).unwrap();
        assert!(Block::open(file.path(), false).is_err());
        drop((a, b));
        Block::open(file.path(), false).unwrap();
    }

    #[test]
    fn open_names_the_missing_path() {
        let err = Block::open(Path::new("/nonexistent/disk.img"), true)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/disk.img"), "{err}");
    }

    #[test]
    fn random_chains_never_panic() {
        let mem = guest_memory();
        let file = disk_file();
        let mut block = Block::open(file.path(), false).unwrap();
        let irq = Arc::new(CountingIrq::default());
        let mut rng = Rng(0xdead_beef);
        for _ in 0..300 {
            // A fresh queue each round: the mock ring does not wrap.
            block.reset();
            let vq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
            block
                .activate(mem.clone(), vec![vq.create_queue().unwrap()], irq.clone())
                .unwrap();
            let mut next = 0u16;
            for _ in 0..4 {
                let n = 1 + rng.below(4) as u16;
                let segs: Vec<(u64, u32, bool)> = (0..n)
                    .map(|_| {
                        let addr = match rng.below(4) {
                            0 => rng.next_u64(),
                            _ => 0x1_0000 + rng.below(0xf_0000),
                        };
                        let len = match rng.below(4) {
                            0 => rng.next_u64() as u32,
                            1 => 16,
                            2 => 512 * rng.below(4) as u32,
                            _ => rng.below(64) as u32,
                        };
                        (addr, len, rng.below(2) == 0)
                    })
                    .collect();
                let kind = [0u32, 1, 4, 8, 99][rng.below(5) as usize];
                let sector = match rng.below(3) {
                    0 => rng.next_u64(),
                    _ => rng.below(SECTORS + 2),
                };
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&kind.to_le_bytes());
                h[8..16].copy_from_slice(&sector.to_le_bytes());
                for &(addr, len, writable) in &segs {
                    if !writable && len >= 16 {
                        let _ = mem.write_slice(&h, GuestAddress(addr));
                    }
                }
                add_chain(&vq, next, &segs);
                next += n;
            }
            block.queue_notify(0);
            assert_eq!(used_entries(&vq).len(), 4, "every chain is returned");
        }
        assert_eq!(
            std::fs::metadata(file.path()).unwrap().len(),
            SECTORS * SECTOR_SIZE
        );
    }
}
