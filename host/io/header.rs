//! Header keywords and raw 80-character header cards.

use super::error::IoError;
use super::fits::Fits;

/// Value of a header keyword.
#[derive(Clone, Debug, PartialEq)]
pub enum KeywordValue {
    /// A character string (long strings are written with the CONTINUE convention).
    Str(String),
    /// A floating-point number (written with enough digits to round-trip).
    Float(f64),
    /// An integer.
    Int(i64),
    /// A logical (T/F).
    Bool(bool),
}

/// One header keyword to write: `NAME = value / comment`.
#[derive(Clone, Debug, PartialEq)]
pub struct Keyword {
    /// Keyword name, at most 8 characters of `A-Z0-9-_`.
    pub name: String,
    /// Its value.
    pub value: KeywordValue,
    /// Comment (empty for none).
    pub comment: String,
}

impl Keyword {
    /// A keyword with a comment.
    pub fn new(name: &str, value: KeywordValue, comment: &str) -> Self {
        Keyword {
            name: name.to_string(),
            value,
            comment: comment.to_string(),
        }
    }

    /// A string keyword.
    pub fn str(name: &str, value: &str, comment: &str) -> Self {
        Self::new(name, KeywordValue::Str(value.to_string()), comment)
    }

    /// A float keyword.
    pub fn float(name: &str, value: f64, comment: &str) -> Self {
        Self::new(name, KeywordValue::Float(value), comment)
    }

    /// An integer keyword.
    pub fn int(name: &str, value: i64, comment: &str) -> Self {
        Self::new(name, KeywordValue::Int(value), comment)
    }

    /// Parses the keyword of a raw card (`None` for commentary cards and unparsable values).
    /// Long CONTINUE strings are not joined here (only the first card's part is returned).
    pub fn from_card(card: &str) -> Option<Keyword> {
        let name = card_name(card);
        if name.is_empty() || card.get(8..10) != Some("= ") {
            return None;
        }
        let rest = card.get(10..)?;
        let (value_text, comment) = split_value_comment(rest);
        let v = value_text.trim();
        let value = if let Some(s) = v.strip_prefix('\'') {
            let inner = s.strip_suffix('\'').unwrap_or(s);
            KeywordValue::Str(inner.replace("''", "'").trim_end().to_string())
        } else if v == "T" || v == "F" {
            KeywordValue::Bool(v == "T")
        } else if let Ok(i) = v.parse::<i64>() {
            KeywordValue::Int(i)
        } else if let Ok(f) = v.replace(['D', 'd'], "E").parse::<f64>() {
            KeywordValue::Float(f)
        } else {
            return None;
        };
        Some(Keyword {
            name: name.to_string(),
            value,
            comment: comment.trim().to_string(),
        })
    }

    /// Formats the keyword as one card of at most 80 characters (`NAME    = value / comment`),
    /// e.g. to build the pass-through `header` of a [`crate::io::PreprocImage`]. A string value
    /// is quoted (quotes doubled); a card longer than 80 characters is truncated, so long
    /// strings (> 68 characters) belong in `keywords` (written with CONTINUE) instead.
    pub fn card(&self) -> String {
        let value = match &self.value {
            KeywordValue::Str(s) => format!("'{}'", s.replace('\'', "''")),
            KeywordValue::Float(f) => format_float(*f),
            KeywordValue::Int(i) => i.to_string(),
            KeywordValue::Bool(b) => if *b { "T" } else { "F" }.to_string(),
        };
        let mut card = format!("{:<8}= {:>20}", self.name, value);
        if !self.comment.is_empty() {
            card.push_str(" / ");
            card.push_str(&self.comment);
        }
        card.truncate(80);
        card
    }
}

/// Shortest round-trip representation of `f` in FITS syntax (exponent with `E`, always a `.`).
fn format_float(f: f64) -> String {
    if !f.is_finite() {
        // FITS has no NaN/inf literal; cfitsio and astropy write these as strings.
        return format!("'{f}'");
    }
    let s = format!("{f:?}");
    let s = s.replace('e', "E");
    if s.contains('.') || s.contains('E') {
        if s.contains('E') && !s.contains('.') {
            // "1E-5" -> "1.0E-5"
            s.replacen('E', ".0E", 1)
        } else {
            s
        }
    } else {
        format!("{s}.0")
    }
}

/// Splits the text after `= ` into value and comment, honouring quotes.
pub(crate) fn split_value_comment(rest: &str) -> (&str, &str) {
    let mut in_quote = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\'' => in_quote = !in_quote,
            '/' if !in_quote => return (&rest[..i], &rest[i + 1..]),
            _ => {}
        }
    }
    (rest, "")
}

/// Keyword name of a raw card (first 8 characters, trimmed; the full name for HIERARCH cards).
pub fn card_name(card: &str) -> &str {
    if let Some(rest) = card.strip_prefix("HIERARCH ") {
        return rest.split('=').next().unwrap_or("").trim();
    }
    card.get(..8).unwrap_or(card).trim()
}

/// Whether a keyword describes the HDU's structure, compression or checksum (and so must not
/// be copied from one HDU to another).
pub fn is_structural(name: &str) -> bool {
    const FIXED: &[&str] = &[
        "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "TFIELDS",
        "EXTNAME", "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM", "END", "THEAP",
    ];
    if FIXED.contains(&name) {
        return true;
    }
    let indexed = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    if indexed("NAXIS") {
        return true;
    }
    // Tile-compression bookkeeping (ZIMAGE, ZBITPIX, ZNAXISn, ZTILEn, ZCMPTYPE, ZNAMEn, ...).
    const Z: &[&str] = &[
        "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZCMPTYPE", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND",
        "ZTENSION", "ZPCOUNT", "ZGCOUNT", "ZHECKSUM", "ZDATASUM", "ZBLANK", "ZSCALE", "ZZERO",
    ];
    Z.contains(&name)
        || ["ZNAXIS", "ZTILE", "ZNAME", "ZVAL"]
            .iter()
            .any(|p| indexed(p))
}

/// The two COMMENT cards cfitsio adds to every primary header it creates (dropped when
/// copying headers so that they do not pile up).
const CFITSIO_BOILERPLATE: [&str; 2] = [
    "COMMENT   FITS (Flexible Image Transport System) format is defined in 'Astronomy",
    "COMMENT   and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H",
];

/// Keeps the cards that are not structural and whose names are not in `drop`; CONTINUE cards
/// follow the fate of the card they continue; cfitsio's two boilerplate primary-header
/// COMMENT cards are dropped.
pub fn filter_cards(cards: &[String], drop: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(cards.len());
    let mut keep_prev = true;
    for card in cards {
        if CFITSIO_BOILERPLATE.iter().any(|b| card.trim_end() == *b) {
            continue;
        }
        let name = card_name(card);
        if name == "CONTINUE" {
            if keep_prev {
                out.push(card.clone());
            }
            continue;
        }
        keep_prev = !is_structural(name) && !drop.contains(&name);
        if keep_prev {
            out.push(card.clone());
        }
    }
    out
}

/// Writes raw cards (structural ones and those named by `keywords` skipped) followed by the
/// keywords, so that each keyword appears once with the given value.
pub(crate) fn write_header(
    fits: &mut Fits,
    cards: &[String],
    keywords: &[Keyword],
) -> Result<(), IoError> {
    let names: Vec<&str> = keywords.iter().map(|k| k.name.as_str()).collect();
    for card in filter_cards(cards, &names) {
        fits.write_card(&card)?;
    }
    for kw in keywords {
        write_keyword(fits, kw)?;
    }
    Ok(())
}

/// Writes one keyword.
pub(crate) fn write_keyword(fits: &mut Fits, kw: &Keyword) -> Result<(), IoError> {
    let valid = !kw.name.is_empty()
        && kw.name.len() <= 8
        && kw
            .name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(IoError::InvalidInput {
            path: fits.path().to_path_buf(),
            detail: format!("invalid keyword name {:?}", kw.name),
        });
    }
    match &kw.value {
        KeywordValue::Str(s) => fits.write_key_str(&kw.name, s, &kw.comment),
        _ => fits.write_card(&kw.card()),
    }
}

/// The value of keyword `name` in a list of raw cards, if present and parsable.
pub fn find_keyword(cards: &[String], name: &str) -> Option<KeywordValue> {
    cards
        .iter()
        .filter(|c| card_name(c) == name)
        .find_map(|c| Keyword::from_card(c))
        .map(|k| k.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_cards_round_trip() {
        for f in [5760.0, 0.8, 1.000_012_345_678_901_2, 1e-5, -2.5e300, 7.0] {
            let kw = Keyword::float("X", f, "c");
            let back = Keyword::from_card(&kw.card()).expect("parsable");
            assert_eq!(back.value, KeywordValue::Float(f), "card {}", kw.card());
        }
    }

    #[test]
    fn parses_cards() {
        let k = Keyword::from_card("CAMERA  = 'r0      '           / camera").expect("card");
        assert_eq!(k.value, KeywordValue::Str("r0".into()));
        assert_eq!(k.comment, "camera");
        let k = Keyword::from_card("A       = 'it''s / x'").expect("card");
        assert_eq!(k.value, KeywordValue::Str("it's / x".into()));
        assert!(Keyword::from_card("COMMENT hello").is_none());
        assert_eq!(
            Keyword::from_card("NSPEC   =                  500").map(|k| k.value),
            Some(KeywordValue::Int(500))
        );
    }

    #[test]
    fn structural_cards_are_dropped() {
        let cards: Vec<String> = [
            "SIMPLE  =                    T",
            "NAXIS2  =                   10",
            "NAXISX  = 'keep'",
            "CHECKSUM= 'abc'",
            "LONG    = 'abc&'",
            "CONTINUE  'def'",
            "CAMERA  = 'r0'",
            "ZTILE1  =                   10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let kept = filter_cards(&cards, &["LONG"]);
        let names: Vec<&str> = kept.iter().map(|c| card_name(c)).collect();
        assert_eq!(names, ["NAXISX", "CAMERA"]);
    }
}
