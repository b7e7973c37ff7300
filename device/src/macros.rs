//! Crate-internal macros.

/// Expands `$body` once for each listed literal index `$n`, bound to `$t`, so that the
/// fixed-size arrays indexed by `$t` stay in registers on the GPU (a plain loop with a nested
/// loop is not fully unrolled by LLVM and puts them in local memory).
macro_rules! unroll {
    ($t:ident in [$($n:literal),*] => $body:block) => {{
        $({
            let $t: usize = $n;
            $body
        })*
    }};
}
