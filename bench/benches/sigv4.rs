//! Cost of SigV4-signing one S3 request.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use kafscale_s3::{Credentials, Signer};

fn sign(c: &mut Criterion) {
    let signer = Signer::new(
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        ),
        "us-east-1",
    );
    c.bench_function("sigv4 sign UploadPart", |b| {
        b.iter(|| {
            let mut req = http::Request::builder()
                .method("PUT")
                .uri("http://127.0.0.1:9000/bucket/default/orders/3/segment-00000000000000123456.kfs?partNumber=2&uploadId=abc")
                .header("host", "127.0.0.1:9000")
                .header("content-length", "8388608")
                .body(())
                .unwrap();
            signer.sign(&mut req, SystemTime::now()).unwrap();
            black_box(req)
        })
    });
}

criterion_group!(benches, sign);
criterion_main!(benches);
