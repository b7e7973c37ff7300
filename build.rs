//! STUB: compiles device/ to PTX (see issue 2).
fn main() {}
