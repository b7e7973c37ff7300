//! Dense linear algebra on row-major square matrices. STUB.
