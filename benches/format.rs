//! Seal/open throughput of object format v1 on one core, by segment size.
//! Compare with `openssl speed -evp aes-256-gcm` on the same machine
//! (`scripts/bench-format` prints both).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealfs::crypto::{DataKey, FileId, Opener, Sealer, HEADER_LEN};

fn format(c: &mut Criterion) {
    let len = 8 << 20;
    let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let key = DataKey::from_bytes([7; 32]);
    let fid = FileId([1; 16]);
    let mut group = c.benchmark_group("format");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    for seg in [16u32 << 10, 64 << 10, 256 << 10, 1 << 20] {
        group.bench_with_input(BenchmarkId::new("seal", seg), &seg, |b, &seg| {
            b.iter(|| Sealer::new(&key, fid, seg).seal(&plain))
        });
        let object = Sealer::new(&key, fid, seg).seal(&plain);
        group.bench_with_input(BenchmarkId::new("open", seg), &seg, |b, _| {
            b.iter(|| {
                Opener::new(&key, &object[..HEADER_LEN], &fid)
                    .unwrap()
                    .open(&object)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, format);
criterion_main!(benches);
