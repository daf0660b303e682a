//! Unit tests of `kv_buffer`.

use super::*;

/// Two tensors' prefix of `len` columns, values a float16 holds exactly.
fn prefix(base: f32, len: usize) -> Vec<HostTensor<f32>> {
    (0..2)
        .map(|t| HostTensor {
            shape: [1, 2, len, 4],
            data: (0..2 * len * 4)
                .map(|i| base + t as f32 + i as f32 / 8.0)
                .collect(),
        })
        .collect()
}

fn assert_row(kv: &mut KvBuffer, row: usize, want: &[HostTensor<f32>]) {
    let len = want[0].shape[2];
    assert_eq!(kv.lens[row], len);
    for (got, want) in kv.columns_of(row, 0..len).expect("read").iter().zip(want) {
        assert_eq!((got.shape, &got.data), (want.shape, &want.data));
    }
}

/// Rows pushed, regrown into more rows and columns, and removed keep their values, in
/// either element type, read and written in place (host memory) or moved as whole rows
/// through copies (device memory; here the copies run on the CPU).
#[test]
fn rows_keep_their_columns_through_pushes_regrowth_and_removal() {
    let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
    for (dtype, in_host) in [
        (FloatDtype::Float32, true),
        (FloatDtype::Float16, true),
        (FloatDtype::Float32, false),
        (FloatDtype::Float16, false),
    ] {
        let at = Arc::new(Placement {
            allocator: Mutex::new(Allocator::default()),
            memory: cache_memory(Device::Cpu).expect("memory"),
            in_host,
            device: Device::Cpu,
        });
        let names = vec![("p0".into(), "q0".into()), ("p1".into(), "q1".into())];
        let mut kv = KvBuffer::with_shape(names, dtype, at, [2, 2, 3, 4], 100).expect("alloc");
        assert_eq!(kv.columns(), 64);
        let (a, b, c) = (prefix(1.0, 3), prefix(-5.0, 2), prefix(20.0, 1));
        assert_eq!(kv.push_row(Some(&a)).expect("a"), 0);
        assert_eq!(kv.push_row(Some(&b)).expect("b"), 1);
        assert!(kv.push_row(None).is_err(), "past the capacity");
        assert!(!kv.fits(1, 3) && !kv.fits(0, 65));
        // Into more columns (head by head in device memory), then into as many (whole
        // rows).
        let mut kv = kv.regrown(3, 70).expect("regrown");
        assert_eq!(kv.columns(), 100);
        let mut kv = kv.regrown(5, 10).expect("regrown again");
        assert_eq!(kv.columns(), 100);
        assert_eq!(kv.push_row(Some(&c)).expect("c"), 2);
        // Rows joining from other buffers, into another row index: as many columns, and
        // fewer.
        let (d, e) = (prefix(7.0, 4), prefix(-9.0, 2));
        for (want, need) in [(&d, 100), (&e, 3)] {
            let names = kv.names.clone();
            let mut other = KvBuffer::with_shape(names, dtype, kv.at.clone(), [2, 2, need, 4], 100)
                .expect("other");
            other.push_row(Some(&a)).expect("a");
            other.push_row(Some(want)).expect("joiner");
            kv.push_row_from(&mut other, 1).expect("joined");
        }
        for (row, want) in [&a, &b, &c, &d, &e].into_iter().enumerate() {
            assert_row(&mut kv, row, want);
        }
        kv.swap_remove(0).expect("remove");
        assert_row(&mut kv, 0, &e);
        assert_row(&mut kv, 1, &b);
        assert_eq!(kv.rows(), 4, "{dtype:?} in host memory: {in_host}");
    }
}

#[test]
fn columns_grow_in_steps_within_the_context() {
    assert_eq!(columns_for(1, 8192), 64);
    assert_eq!(columns_for(64, 8192), 64);
    assert_eq!(columns_for(65, 8192), 128);
    assert_eq!(columns_for(100, 96), 100);
    assert_eq!(columns_for(90, 96), 96);
}
