//! virtio-mmio register traffic: reads and writes at fuzzer-chosen offsets,
//! sizes and values against the console and the block device. The
//! transport must never panic and its state machine must stay legal.

#![no_main]

use isolate_fuzz::{guest_memory, read_reg, reg, CountingIrq};
use isolate_vm::devices::virtio::{Block, Console, MmioTransport, VirtioDevice};
use isolate_vm::devices::BusDevice;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

#[derive(Arbitrary, Debug)]
enum Access {
    /// A register or config access of any size at any offset of the window.
    Read {
        offset: u16,
        len: u8,
    },
    Write {
        offset: u16,
        bytes: Vec<u8>,
    },
    /// An aligned 4-byte write to a register (the common case, so the
    /// fuzzer reaches deep states quickly).
    Reg {
        index: u8,
        value: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    block: bool,
    read_only: bool,
    accesses: Vec<Access>,
}

/// The registers a driver writes.
const WRITABLE: [u64; 20] = [
    0x014, 0x020, 0x024, 0x030, 0x038, 0x044, 0x050, 0x064, 0x070, 0x070, 0x070, 0x080, 0x084,
    0x090, 0x094, 0x0a0, 0x0a4, 0x0ac, 0x100, 0x0fc,
];

const LEGAL_STATUS: u32 = reg::ACKNOWLEDGE
    | reg::DRIVER
    | reg::FEATURES_OK
    | reg::DRIVER_OK
    | reg::FAILED
    | reg::NEEDS_RESET;

fn device(block: bool, read_only: bool) -> Box<dyn VirtioDevice> {
    if block {
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        Box::new(Block::new(file, read_only, "fuzz").unwrap())
    } else {
        Box::new(Console::new(Box::new(std::io::sink())))
    }
}

fuzz_target!(|input: Input| {
    // 64 KiB of zeros: rings at address 0.. are inside memory, so the
    // driver can activate the device.
    let mem = guest_memory(0x1_0000, &[]);
    let irq = Arc::new(CountingIrq::default());
    let dev = device(input.block, input.read_only);
    let device_type = dev.device_type();
    let mut t = MmioTransport::new(mem, irq, dev).unwrap();
    let mut errors = 0;
    for access in input.accesses.iter().take(256) {
        let old_status = t.status();
        let mut reset = false;
        match access {
            Access::Read { offset, len } => {
                let offset = u64::from(*offset) % 0x1000;
                let len = usize::from(*len % 9);
                let mut data = vec![0xa5u8; len];
                t.read(offset, &mut data);
                if offset < reg::CONFIG && (len != 4 || offset % 4 != 0) {
                    assert!(data.iter().all(|&b| b == 0), "refused read left {data:?}");
                }
                if len == 4 && offset % 4 == 0 {
                    let v = u32::from_le_bytes(data.try_into().unwrap());
                    match offset {
                        reg::MAGIC_VALUE => assert_eq!(v, 0x7472_6976),
                        reg::VERSION => assert_eq!(v, 2),
                        reg::DEVICE_ID => assert_eq!(v, device_type),
                        reg::STATUS => assert_eq!(v, t.status()),
                        _ => {}
                    }
                }
            }
            Access::Write { offset, bytes } => {
                let offset = u64::from(*offset) % 0x1000;
                let bytes = &bytes[..bytes.len().min(8)];
                reset = offset == reg::STATUS && bytes == [0, 0, 0, 0];
                t.write(offset, bytes);
            }
            Access::Reg { index, value } => {
                let offset = WRITABLE[usize::from(*index) % WRITABLE.len()];
                reset = offset == reg::STATUS && *value == 0;
                t.write(offset, &value.to_le_bytes());
            }
        }

        // The state machine stays legal.
        let status = t.status();
        assert_eq!(status & !LEGAL_STATUS, 0, "status {status:#x}");
        if reset {
            assert_eq!(status, 0);
            assert!(!t.is_activated());
            assert_eq!(t.interrupt().status(), 0);
        } else {
            // Bits are only ever added until a reset.
            assert_eq!(
                status & old_status,
                old_status,
                "{old_status:#x} -> {status:#x}"
            );
        }
        if t.is_activated() {
            // Live only with FEATURES_OK and DRIVER_OK, and not broken.
            assert_eq!(
                status & (reg::FEATURES_OK | reg::DRIVER_OK),
                reg::FEATURES_OK | reg::DRIVER_OK
            );
            assert_eq!(status & reg::NEEDS_RESET, 0);
        } else if status & reg::DRIVER_OK != 0 {
            // DRIVER_OK that did not activate the device is flagged.
            assert_ne!(status & reg::NEEDS_RESET, 0, "status {status:#x}");
        }
        let now = t.guest_errors();
        assert!(now >= errors);
        errors = now;
        assert_eq!(read_reg(&mut t, reg::STATUS), status);
        // Interrupt status only ever holds the two defined bits.
        assert_eq!(read_reg(&mut t, reg::INTERRUPT_STATUS) & !3, 0);
    }
});
