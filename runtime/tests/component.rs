//! The embedded component against the native library, bad input, and limits.

use std::time::Duration;

use hearth_runtime::{ComponentModel, Error, Limits, OnOverrun, Runtime};
use hearth_worker::{Model, ModelConfig, OptimizerConfig};

fn config(arch: &str) -> ModelConfig {
    ModelConfig {
        arch: arch.into(),
        seed: 7,
        optimizer: OptimizerConfig::default(),
    }
}

/// The first `n` real MNIST training images starting at `from`.
fn mnist_batch(from: usize, n: usize) -> (Vec<u8>, Vec<u8>) {
    let m = hearth_mnist::load(&hearth_mnist::bundled_dir()).expect("bundled MNIST");
    let idx: Vec<usize> = (from..from + n).collect();
    let (mut px, mut lb) = (Vec::new(), Vec::new());
    m.train.gather(&idx, &mut px, &mut lb);
    (px, lb)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn component_and_native_training_steps_are_bit_identical() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let component = runtime.load_builtin().unwrap();
    for arch in ["lenet5", "lenet5-tanh", "lenet-mxnet"] {
        let mut native = Model::new(&config(arch)).unwrap();
        let mut wasm = ComponentModel::new(&runtime, &component, &config(arch)).unwrap();
        assert_eq!(
            bits(native.params()),
            bits(&wasm.params().unwrap()),
            "{arch}: initial parameters"
        );
        for step in 0..3 {
            let (px, lb) = mnist_batch(step * 64, 64);
            let a = native.train_batch(&px, &lb).unwrap();
            let b = wasm.train_batch(&px, &lb).unwrap();
            assert_eq!(
                a.loss.to_bits(),
                b.loss.to_bits(),
                "{arch} step {step}: loss"
            );
            assert_eq!(a.correct, b.correct);
        }
        assert_eq!(
            bits(native.params()),
            bits(&wasm.params().unwrap()),
            "{arch}: parameters after 3 steps"
        );
        assert_eq!(
            bits(native.optimizer_state()),
            bits(&wasm.optimizer_state().unwrap()),
            "{arch}: momentum"
        );
        let (px, lb) = mnist_batch(1000, 300);
        let ea = native.evaluate(&px, &lb, true).unwrap();
        let eb = wasm.evaluate(&px, &lb, true).unwrap();
        assert_eq!(
            (ea.loss_sum.to_bits(), ea.correct, ea.predictions),
            (eb.loss_sum.to_bits(), eb.correct, eb.predictions)
        );
        assert_eq!(wasm.describe(), &native.describe());
    }
}

#[test]
fn state_moves_between_instances_without_loss() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let component = runtime.load_builtin().unwrap();
    let mut a = ComponentModel::new(&runtime, &component, &config("lenet5")).unwrap();
    let (px, lb) = mnist_batch(0, 32);
    a.train_batch(&px, &lb).unwrap();
    let mut b = ComponentModel::new(
        &runtime,
        &component,
        &ModelConfig {
            seed: 99,
            ..config("lenet5")
        },
    )
    .unwrap();
    b.set_params(&a.params().unwrap()).unwrap();
    b.set_optimizer_state(&a.optimizer_state().unwrap())
        .unwrap();
    let (px, lb) = mnist_batch(32, 32);
    a.train_batch(&px, &lb).unwrap();
    b.train_batch(&px, &lb).unwrap();
    assert_eq!(bits(&a.params().unwrap()), bits(&b.params().unwrap()));
    let lr = OptimizerConfig {
        learning_rate: 0.01,
        ..OptimizerConfig::default()
    };
    b.set_optimizer(lr).unwrap();
    assert_eq!(b.optimizer().unwrap(), lr);
}

#[test]
fn bad_input_is_rejected_and_the_model_survives() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let component = runtime.load_builtin().unwrap();
    let unknown = ComponentModel::new(&runtime, &component, &config("alexnet"));
    assert!(
        matches!(unknown, Err(Error::Rejected(ref m)) if m.contains("alexnet") && m.contains("lenet5"))
    );
    assert_eq!(
        ComponentModel::architectures(&runtime, &component).unwrap(),
        ["lenet5", "lenet5-tanh", "lenet-mxnet"]
    );

    let mut m = ComponentModel::new(&runtime, &component, &config("lenet5")).unwrap();
    let before = m.params().unwrap();
    let rejected = |r: Result<(), Error>, needle: &str| match r {
        Err(Error::Rejected(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected a rejection containing {needle:?}, got {other:?}"),
    };
    rejected(
        m.set_params(&before[1..]),
        "61705 values but lenet5 needs 61706",
    );
    let mut nan = before.clone();
    nan[3] = f32::INFINITY;
    rejected(m.set_params(&nan), "non-finite");
    rejected(m.set_optimizer_state(&[0.0; 3]), "optimizer state");
    let (px, lb) = mnist_batch(0, 4);
    rejected(m.train_batch(&px, &[1, 2, 3, 10]).map(drop), "label 10");
    rejected(m.train_batch(&px[..100], &lb).map(drop), "pixel bytes");
    rejected(m.evaluate(&px, &lb[..3], false).map(drop), "pixel bytes");
    rejected(m.predict(&px[..10]).map(drop), "multiple of 784");
    rejected(
        m.set_optimizer(OptimizerConfig {
            momentum: 1.5,
            ..OptimizerConfig::default()
        }),
        "momentum",
    );
    assert_eq!(
        bits(&m.params().unwrap()),
        bits(&before),
        "rejected calls changed nothing"
    );
    m.train_batch(&px, &lb).unwrap();
}

#[test]
fn without_a_timeout_results_are_the_same() {
    let fast = Runtime::new(Limits {
        call_timeout: None,
        ..Limits::default()
    })
    .unwrap();
    let safe = Runtime::new(Limits::default()).unwrap();
    let (a, b) = (fast.load_builtin().unwrap(), safe.load_builtin().unwrap());
    let mut m1 = ComponentModel::new(&fast, &a, &config("lenet5")).unwrap();
    let mut m2 = ComponentModel::new(&safe, &b, &config("lenet5")).unwrap();
    let (px, lb) = mnist_batch(0, 64);
    m1.train_batch(&px, &lb).unwrap();
    m2.train_batch(&px, &lb).unwrap();
    assert_eq!(bits(&m1.params().unwrap()), bits(&m2.params().unwrap()));
}

#[test]
fn tampered_component_fails_to_load() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let mut bytes = hearth_runtime::BUILTIN_COMPONENT.to_vec();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    assert!(matches!(runtime.load(&bytes), Err(Error::Load(_))));
    assert!(matches!(
        runtime.load(b"not wasm at all"),
        Err(Error::Load(_))
    ));
    assert_ne!(
        hearth_runtime::digest(&bytes),
        runtime.load_builtin().unwrap().digest()
    );
}

#[test]
fn memory_and_time_limits_trap_instead_of_hanging_the_host() {
    // 2 MiB is less than the component needs for lenet-mxnet's parameters.
    let small = Runtime::new(Limits {
        memory_bytes: 2 << 20,
        ..Limits::default()
    })
    .unwrap();
    let component = small.load_builtin().unwrap();
    assert!(matches!(
        ComponentModel::new(&small, &component, &config("lenet-mxnet")),
        Err(Error::Trap(_) | Error::Load(_))
    ));

    let hasty = Runtime::new(Limits {
        // Creating the model takes ~10 ms; evaluating 20,000 images, seconds.
        call_timeout: Some(Duration::from_millis(250)),
        ..Limits::default()
    })
    .unwrap();
    let component = hasty.load_builtin().unwrap();
    let mut m = ComponentModel::new(&hasty, &component, &config("lenet-mxnet")).unwrap();
    let (px, lb) = mnist_batch(0, 20_000);
    match m.evaluate(&px, &lb, false) {
        Err(Error::Trap(e)) => assert!(format!("{e:?}").contains("interrupt"), "{e:?}"),
        other => panic!("expected a timeout trap, got {:?}", other.map(|s| s.count)),
    }
}

/// Exit code of the child process when its watchdog fires.
const OVERRUN_EXIT: i32 = 42;

fn exit_on_overrun(_: Duration) -> ! {
    std::process::exit(OVERRUN_EXIT)
}

/// With `OnOverrun::EndProcess` the component has no epoch checks, so a call
/// cannot be interrupted: the watchdog ends the process instead. The test
/// runs that in a child process (this same test binary) and checks that the
/// child ends by the watchdog, soon after the deadline, and that calls which
/// finish in time (creating the model) do not set it off.
#[test]
fn an_overrunning_call_ends_the_process_when_there_are_no_epoch_checks() {
    if std::env::var_os("HEARTH_WATCHDOG_CHILD").is_some() {
        let runtime = Runtime::new(Limits {
            call_timeout: Some(Duration::from_millis(250)),
            on_overrun: OnOverrun::EndProcess(exit_on_overrun),
            ..Limits::default()
        })
        .unwrap();
        let component = runtime.load_builtin().unwrap();
        let mut m = ComponentModel::new(&runtime, &component, &config("lenet-mxnet")).unwrap();
        println!("model created");
        let (px, lb) = mnist_batch(0, 20_000);
        let _ = m.evaluate(&px, &lb, false);
        println!("evaluation returned");
        std::process::exit(0);
    }
    let started = std::time::Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_overrunning_call_ends_the_process_when_there_are_no_epoch_checks",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HEARTH_WATCHDOG_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(OVERRUN_EXIT),
        "child said: {stdout}"
    );
    assert!(stdout.contains("model created"), "{stdout}");
    assert!(!stdout.contains("evaluation returned"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// The largest difference between two vectors, relative to the largest value.
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn two_or_three_instances_sharing_each_step_train_like_one() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let component = runtime.load_builtin().unwrap();
    // Without momentum (FedAvgM workers) and with it (weight decay in both).
    for momentum in [0.0, 0.9] {
        let mut cfg = config("lenet5");
        cfg.optimizer.momentum = momentum;
        let mut one = hearth_runtime::Replicas::new(&runtime, &component, &cfg, 1).unwrap();
        for threads in [2, 3] {
            let mut many =
                hearth_runtime::Replicas::new(&runtime, &component, &cfg, threads).unwrap();
            assert_eq!(many.threads(), threads);
            let start = one.params().unwrap();
            one.set_params(&start).unwrap();
            one.set_optimizer_state(&vec![0.0; start.len()]).unwrap();
            many.set_params(&start).unwrap();
            for step in 0..3 {
                let (px, lb) = mnist_batch(64 * step, 64);
                let a = one.train_batch(&px, &lb).unwrap();
                let b = many.train_batch(&px, &lb).unwrap();
                assert_eq!((a.correct, a.count), (b.correct, b.count));
                assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
            }
            let gap = relative_gap(&one.params().unwrap(), &many.params().unwrap());
            assert!(
                gap < 1e-5,
                "momentum {momentum}, {threads} threads: gap {gap}"
            );
            assert_ne!(one.params().unwrap(), start, "it trained");
        }
    }
    // A batch smaller than the thread count trains on as many as it fills.
    let mut many =
        hearth_runtime::Replicas::new(&runtime, &component, &config("lenet5"), 4).unwrap();
    let (px, lb) = mnist_batch(0, 2);
    assert_eq!(many.train_batch(&px, &lb).unwrap().count, 2);
}
