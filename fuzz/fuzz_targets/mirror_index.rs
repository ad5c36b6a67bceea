//! Any bytes as `mirror.json`: no panic; what parses survives a write/read round trip.
#![no_main]

use backup_core::MirrorIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((index, _problems)) = MirrorIndex::from_json("fuzz.json", data) {
        let written = index.to_json();
        let (again, problems) =
            MirrorIndex::from_json("again.json", &written).expect("our own output parses");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, index);
    }
});
