//! The `desi-extract` command line.
fn main() -> anyhow::Result<()> {
    Ok(())
}
