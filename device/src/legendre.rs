//! Legendre series (spec section 1.1). STUB.
