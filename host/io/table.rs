//! Binary tables carried through byte for byte (the preproc FIBERMAP into the frame file).
//!
//! Choice: a [`FitsTable`] keeps the column definitions, the other header cards and the raw
//! big-endian row bytes exactly as stored. Slicing rows and rewriting the table therefore
//! preserves every column (any type, TDIM, TNULL, units, scaling) without interpreting it;
//! typed accessors decode the few columns the program itself needs. Variable-length array
//! columns (P/Q, data in the heap) are not supported and are rejected on read.

use std::ops::Range;
use std::path::Path;

use super::error::IoError;
use super::fits::{Fits, HduKind};
use super::header::{card_name, filter_cards, Keyword};

/// One column of a [`FitsTable`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableColumn {
    /// TTYPEn.
    pub name: String,
    /// TFORMn, e.g. `J`, `3A`, `2000D`.
    pub tform: String,
    /// Type letter of TFORM (`L X B I J K A E D C M`).
    pub code: char,
    /// Repeat count of TFORM.
    pub repeat: usize,
    /// Byte offset of the column within a row.
    pub offset: usize,
    /// Bytes per row of the column.
    pub width: usize,
    /// The column's description: the comment of its TTYPEn card (empty for none), carried
    /// from the input file to the output as desispec's `annotate_fibermap` writes it.
    #[serde(default)]
    pub comment: String,
}

/// A FITS binary table held as raw rows (see the module documentation).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitsTable {
    /// EXTNAME of the table.
    pub extname: String,
    /// Columns in file order.
    pub columns: Vec<TableColumn>,
    /// Header cards other than the structural ones and TTYPEn/TFORMn (units, TDIMn, TNULLn,
    /// comments and ordinary keywords), as 80-character cards.
    pub cards: Vec<String>,
    /// Bytes per row (NAXIS1).
    pub row_bytes: usize,
    /// Number of rows (NAXIS2).
    pub nrows: usize,
    /// Row data, `nrows * row_bytes` bytes, big-endian as in the file.
    pub data: Vec<u8>,
}

/// Bytes of one element of a TFORM type letter (for `X`, of one bit group: handled apart).
fn elem_bytes(code: char) -> Option<usize> {
    Some(match code {
        'L' | 'B' | 'A' => 1,
        'I' => 2,
        'J' | 'E' => 4,
        'K' | 'D' | 'C' => 8,
        'M' => 16,
        _ => return None,
    })
}

/// Parses a binary-table TFORM (`rT...`) into (repeat, type letter, bytes).
fn parse_tform(tform: &str) -> Option<(usize, char, usize)> {
    let t = tform.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let repeat: usize = if digits.is_empty() {
        1
    } else {
        digits.parse().ok()?
    };
    let code = t[digits.len()..].chars().next()?.to_ascii_uppercase();
    let width = if code == 'X' {
        repeat.div_ceil(8)
    } else {
        repeat * elem_bytes(code)?
    };
    Some((repeat, code, width))
}

impl FitsTable {
    /// A table of float64 (`D`) columns, one value per row each: (name, description, values).
    /// None when the columns differ in length.
    pub fn from_f64_columns(extname: &str, columns: &[(&str, &str, &[f64])]) -> Option<Self> {
        let nrows = columns.first().map_or(0, |c| c.2.len());
        if columns.iter().any(|c| c.2.len() != nrows) {
            return None;
        }
        let mut data = Vec::with_capacity(nrows * columns.len() * 8);
        for row in 0..nrows {
            for column in columns {
                data.extend_from_slice(&column.2[row].to_be_bytes());
            }
        }
        let defs: Vec<(&str, &str)> = columns.iter().map(|c| (c.0, "D")).collect();
        let mut table = Self::from_parts(extname, &defs, Vec::new(), nrows, data)?;
        for (column, def) in table.columns.iter_mut().zip(columns) {
            column.comment = def.1.to_string();
        }
        Some(table)
    }

    /// Builds a table from column (name, TFORM) pairs and raw row bytes.
    pub(crate) fn from_parts(
        extname: &str,
        defs: &[(&str, &str)],
        cards: Vec<String>,
        nrows: usize,
        data: Vec<u8>,
    ) -> Option<Self> {
        let mut columns = Vec::with_capacity(defs.len());
        let mut offset = 0;
        for (name, tform) in defs {
            let (repeat, code, width) = parse_tform(tform)?;
            columns.push(TableColumn {
                name: name.to_string(),
                tform: tform.to_string(),
                code,
                repeat,
                offset,
                width,
                comment: String::new(),
            });
            offset += width;
        }
        (data.len() == nrows * offset).then(|| FitsTable {
            extname: extname.to_string(),
            columns,
            cards,
            row_bytes: offset,
            nrows,
            data,
        })
    }

    /// The column called `name` (case-insensitive).
    pub fn column(&self, name: &str) -> Option<&TableColumn> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Column names in file order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// Raw bytes of column `col` in row `row`.
    fn cell(&self, col: &TableColumn, row: usize) -> &[u8] {
        let start = row * self.row_bytes + col.offset;
        &self.data[start..start + col.width]
    }

    /// A scalar integer column (B, I, J or K; raw stored values, TZERO/TSCAL not applied).
    /// None when absent or not a scalar integer column.
    pub fn column_i64(&self, name: &str) -> Option<Vec<i64>> {
        let col = self.column(name)?;
        if col.repeat != 1 {
            return None;
        }
        let decode: fn(&[u8]) -> i64 = match col.code {
            'B' => |b| i64::from(b[0]),
            'I' => |b| i64::from(i16::from_be_bytes([b[0], b[1]])),
            'J' => |b| i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            'K' => |b| i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            _ => return None,
        };
        Some((0..self.nrows).map(|r| decode(self.cell(col, r))).collect())
    }

    /// A character column (A), trailing blanks and NULs removed. None when absent or not `A`.
    pub fn column_str(&self, name: &str) -> Option<Vec<String>> {
        let col = self.column(name)?;
        if col.code != 'A' {
            return None;
        }
        Some(
            (0..self.nrows)
                .map(|r| {
                    let b = self.cell(col, r);
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    String::from_utf8_lossy(&b[..end]).trim_end().to_string()
                })
                .collect(),
        )
    }

    /// A D (f64) column, `repeat` values per row, rows concatenated. None when absent or not D.
    pub fn column_f64(&self, name: &str) -> Option<Vec<f64>> {
        let col = self.column(name)?;
        if col.code != 'D' {
            return None;
        }
        let mut out = Vec::with_capacity(self.nrows * col.repeat);
        for r in 0..self.nrows {
            for chunk in self.cell(col, r).chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                out.push(f64::from_be_bytes(b));
            }
        }
        Some(out)
    }

    /// The rows `rows` as a new table (same columns and cards), or None when out of range.
    pub fn slice_rows(&self, rows: Range<usize>) -> Option<FitsTable> {
        if rows.start > rows.end || rows.end > self.nrows {
            return None;
        }
        let data = self.data[rows.start * self.row_bytes..rows.end * self.row_bytes].to_vec();
        Some(FitsTable {
            nrows: rows.len(),
            data,
            ..self.clone()
        })
    }

    /// A minimal FIBERMAP for simulated frames: one row per fiber of `fibers` with FIBER (J),
    /// TARGETID (K, = the fiber number), OBJTYPE (3A, `SKY` for fibers in `sky_fibers`, else
    /// `TGT`) and FIBERSTATUS (J, 0).
    pub fn minimal_fibermap(fibers: Range<usize>, sky_fibers: &[usize]) -> FitsTable {
        let mut data = Vec::with_capacity(fibers.len() * 19);
        for fiber in fibers.clone() {
            data.extend_from_slice(&(fiber as i32).to_be_bytes());
            data.extend_from_slice(&(fiber as i64).to_be_bytes());
            data.extend_from_slice(if sky_fibers.contains(&fiber) {
                b"SKY"
            } else {
                b"TGT"
            });
            data.extend_from_slice(&0i32.to_be_bytes());
        }
        let defs = [
            ("FIBER", "J"),
            ("TARGETID", "K"),
            ("OBJTYPE", "3A"),
            ("FIBERSTATUS", "J"),
        ];
        // The layout above matches the definitions by construction.
        Self::from_parts("FIBERMAP", &defs, Vec::new(), fibers.len(), data).unwrap_or_else(|| {
            unreachable!("minimal fibermap layout is 19 bytes per row by construction")
        })
    }
}

/// Reads the current HDU of `fits` as a [`FitsTable`].
pub(crate) fn read_table_hdu(fits: &mut Fits, extname: &str) -> Result<FitsTable, IoError> {
    if fits.hdu_kind()? != HduKind::BinTable {
        return Err(IoError::Shape {
            path: fits.path().to_path_buf(),
            hdu: fits.hdu_label().to_string(),
            detail: "expected a binary table".into(),
        });
    }
    let shape_err = |fits: &Fits, detail: String| IoError::Shape {
        path: fits.path().to_path_buf(),
        hdu: fits.hdu_label().to_string(),
        detail,
    };
    let ncols = fits.table_ncols()?;
    let nrows = fits.table_nrows()?;
    let row_bytes = fits.key_i64("NAXIS1")?.unwrap_or(0).max(0) as usize;
    if fits.key_i64("PCOUNT")?.unwrap_or(0) != 0 {
        return Err(shape_err(
            fits,
            "variable-length array columns (PCOUNT > 0) are not supported".into(),
        ));
    }
    let mut names = Vec::with_capacity(ncols);
    let mut forms = Vec::with_capacity(ncols);
    for i in 1..=ncols {
        names.push(fits.key_string(&format!("TTYPE{i}"))?.unwrap_or_default());
        forms.push(fits.key_string(&format!("TFORM{i}"))?.ok_or_else(|| {
            IoError::MissingKeyword {
                path: fits.path().to_path_buf(),
                hdu: fits.hdu_label().to_string(),
                key: format!("TFORM{i}"),
            }
        })?);
    }
    let cards = fits.cards()?;
    let comments: Vec<String> = (1..=ncols)
        .map(|i| {
            let key = format!("TTYPE{i}");
            cards
                .iter()
                .find(|c| card_name(c) == key)
                .and_then(|c| Keyword::from_card(c))
                .map(|k| k.comment)
                .unwrap_or_default()
        })
        .collect();
    let defs: Vec<String> = (1..=ncols)
        .flat_map(|i| [format!("TTYPE{i}"), format!("TFORM{i}")])
        .collect();
    let def_refs: Vec<&str> = defs.iter().map(String::as_str).collect();
    let kept = filter_cards(&cards, &def_refs);
    let data = fits.read_table_bytes(nrows, row_bytes)?;
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .zip(&forms)
        .map(|(n, f)| (n.as_str(), f.as_str()))
        .collect();
    let mut table = FitsTable::from_parts(extname, &pairs, kept, nrows, data).ok_or_else(|| {
        shape_err(
            fits,
            format!("column formats {forms:?} do not add up to NAXIS1 = {row_bytes} bytes or are unsupported"),
        )
    })?;
    for (column, comment) in table.columns.iter_mut().zip(comments) {
        column.comment = comment;
    }
    Ok(table)
}

/// Appends `table` as a binary table HDU named `extname`.
pub(crate) fn write_table_hdu(
    fits: &mut Fits,
    table: &FitsTable,
    extname: &str,
) -> Result<(), IoError> {
    if table.data.len() != table.nrows * table.row_bytes {
        return Err(IoError::InvalidInput {
            path: fits.path().to_path_buf(),
            detail: format!(
                "table {}: {} data bytes for {} rows of {} bytes",
                table.extname,
                table.data.len(),
                table.nrows,
                table.row_bytes
            ),
        });
    }
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let forms: Vec<String> = table.columns.iter().map(|c| c.tform.clone()).collect();
    fits.create_bintable(extname, table.nrows, &names, &forms)?;
    for (i, column) in table.columns.iter().enumerate() {
        if !column.comment.is_empty() {
            fits.modify_comment(&format!("TTYPE{}", i + 1), &column.comment)?;
        }
    }
    let defs: Vec<String> = (1..=table.columns.len())
        .flat_map(|i| [format!("TTYPE{i}"), format!("TFORM{i}")])
        .collect();
    let def_refs: Vec<&str> = defs.iter().map(String::as_str).collect();
    for card in filter_cards(&table.cards, &def_refs) {
        if card_name(&card) == "EXTNAME" {
            continue;
        }
        fits.write_card(&card)?;
    }
    fits.reparse_header()?;
    fits.write_table_bytes(&table.data)?;
    fits.write_checksum()
}

/// Reads the binary table `extname` of `path`.
pub fn read_table(path: &Path, extname: &str) -> Result<FitsTable, IoError> {
    let mut fits = Fits::open(path)?;
    fits.require_hdu(extname)?;
    read_table_hdu(&mut fits, extname)
}
