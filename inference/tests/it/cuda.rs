//! The CUDA execution provider gives the same greedy tokens as the CPU. Skipped, with the
//! reason printed, when the crate is built without the `cuda` feature or no CUDA device
//! answers (CI has none); `inference/benches/gpu.sh` runs the same check on a GPU machine.

use tribute_inference::{Device, GenerateRequest, Generator, GeneratorOptions, Prompt};

#[test]
fn cuda_matches_cpu_greedy_tokens() {
    if !cfg!(feature = "cuda") {
        eprintln!("skipped: tribute-inference was built without the `cuda` feature");
        return;
    }
    let dir = crate::smollm2_dir();
    let gpu = Generator::load_with(
        &dir,
        GeneratorOptions {
            device: Device::Cuda { device_id: 0 },
            ..Default::default()
        },
    )
    .expect("load (falls back to the CPU when CUDA is unavailable)");
    if gpu.device() == Device::Cpu {
        eprintln!("skipped: no usable CUDA device (the generator fell back to the CPU)");
        return;
    }
    let cpu = crate::smollm2();
    let req = GenerateRequest::new(Prompt::from("What is the capital of France?")).max_tokens(24);
    let a = cpu.generate(&req).expect("cpu");
    let b = gpu.generate(&req).expect("cuda");
    assert_eq!(a.tokens, b.tokens);
}
