//! Norwegian identity numbers, checked by their check digits: leaf functions that the
//! configuration reader and the consent headers both use.

/// Norwegian organisation number: 9 digits, the last a mod-11 check digit with weights 3 2 7 6 5 4 3 2.
pub fn is_org_number(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 9 || s.len() != 9 {
        return false;
    }
    let sum: u32 = digits[..8]
        .iter()
        .zip([3, 2, 7, 6, 5, 4, 3, 2])
        .map(|(d, w)| d * w)
        .sum();
    match 11 - sum % 11 {
        11 => digits[8] == 0,
        10 => false,
        check => digits[8] == check,
    }
}

/// A Norwegian fødselsnummer or D-number: 11 digits whose two last are mod-11 check digits
/// (weights 3 7 6 1 8 9 4 5 2 and 5 4 3 2 7 6 5 4 3 2). The date is not checked: D-numbers,
/// H-numbers and synthetic test persons (Tenor) move the day or month digits.
pub fn is_person_number(s: &str) -> bool {
    let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 11 || s.len() != 11 {
        return false;
    }
    let check = |weights: &[u32]| -> Option<u32> {
        let sum: u32 = d.iter().zip(weights).map(|(d, w)| d * w).sum();
        match 11 - sum % 11 {
            11 => Some(0),
            10 => None,
            c => Some(c),
        }
    };
    check(&[3, 7, 6, 1, 8, 9, 4, 5, 2]) == Some(d[9])
        && check(&[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) == Some(d[10])
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
