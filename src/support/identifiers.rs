//! Norwegian identity numbers, checked by their check digits: leaf functions that the
//! configuration reader and the consent headers both use.

/// The mod-11 check digit of `digits` under `weights`; `None` where the rule gives 10, which no
/// valid number has.
fn mod11(digits: &[u32], weights: &[u32]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        check => Some(check),
    }
}

fn digits(s: &str) -> Option<Vec<u32>> {
    s.chars().map(|c| c.to_digit(10)).collect()
}

/// Norwegian organisation number: 9 digits, the last a mod-11 check digit with weights 3 2 7 6 5 4 3 2.
pub fn is_org_number(s: &str) -> bool {
    match digits(s) {
        Some(d) if d.len() == 9 && s.len() == 9 => {
            mod11(&d[..8], &[3, 2, 7, 6, 5, 4, 3, 2]) == Some(d[8])
        }
        _ => false,
    }
}

/// The fødselsnummer (or D-number) that begins with these 9 digits: they followed by their two
/// mod-11 check digits (weights 3 7 6 1 8 9 4 5 2, then 5 4 3 2 7 6 5 4 3 2). `None` when the
/// digits are not 9, or a check digit would be 10: no number begins so.
pub fn person_number(first_nine: &str) -> Option<String> {
    let mut d = digits(first_nine).filter(|d| d.len() == 9 && first_nine.len() == 9)?;
    let k1 = mod11(&d, &[3, 7, 6, 1, 8, 9, 4, 5, 2])?;
    d.push(k1);
    let k2 = mod11(&d, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2])?;
    Some(format!("{first_nine}{k1}{k2}"))
}

/// A Norwegian fødselsnummer or D-number: 11 digits whose two last are the check digits of the
/// first nine ([`person_number`]). The date is not checked: D-numbers, H-numbers and synthetic test
/// persons (Tenor) move the day or month digits.
pub fn is_person_number(s: &str) -> bool {
    s.len() == 11 && s.get(..9).and_then(person_number).as_deref() == Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_numbers_are_checked_with_mod_11() {
        for good in ["910753614", "974760673", "889640782"] {
            assert!(is_org_number(good), "{good}");
        }
        for bad in ["910753615", "91075361", "9107536140", "91075361a", ""] {
            assert!(!is_org_number(bad), "{bad}");
        }
    }

    #[test]
    fn person_numbers_need_both_check_digits() {
        // Synthetic numbers with right check digits (Tenor's and Altinn's examples).
        for good in ["01010012356", "25922947409", "03867199348", "21818297804"] {
            assert!(is_person_number(good), "{good}");
        }
        for bad in [
            "01010012357",
            "01010012346",
            "0101001235",
            "0101001235a",
            "",
        ] {
            assert!(!is_person_number(bad), "{bad}");
        }
    }
}
