//! A 5x5 block font for the SAS, so the four characters both people read aloud are impossible to misread.
//! Letters render in upper case (the SAS alphabet, z-base-32, has no case-only pairs).

/// Rows per glyph.
pub const HEIGHT: usize = 5;
/// Columns per glyph, plus one column of spacing between glyphs.
pub const WIDTH: usize = 5;

fn glyph(c: char) -> [&'static str; HEIGHT] {
    match c.to_ascii_uppercase() {
        'A' => [" ### ", "#   #", "#####", "#   #", "#   #"],
        'B' => ["#### ", "#   #", "#### ", "#   #", "#### "],
        'C' => [" ####", "#    ", "#    ", "#    ", " ####"],
        'D' => ["#### ", "#   #", "#   #", "#   #", "#### "],
        'E' => ["#####", "#    ", "#### ", "#    ", "#####"],
        'F' => ["#####", "#    ", "#### ", "#    ", "#    "],
        'G' => [" ####", "#    ", "#  ##", "#   #", " ####"],
        'H' => ["#   #", "#   #", "#####", "#   #", "#   #"],
        'I' => ["#####", "  #  ", "  #  ", "  #  ", "#####"],
        'J' => ["#####", "   # ", "   # ", "#  # ", " ##  "],
        'K' => ["#   #", "#  # ", "###  ", "#  # ", "#   #"],
        'L' => ["#    ", "#    ", "#    ", "#    ", "#####"],
        'M' => ["#   #", "## ##", "# # #", "#   #", "#   #"],
        'N' => ["#   #", "##  #", "# # #", "#  ##", "#   #"],
        'O' => [" ### ", "#   #", "#   #", "#   #", " ### "],
        'P' => ["#### ", "#   #", "#### ", "#    ", "#    "],
        'Q' => [" ### ", "#   #", "# # #", "#  # ", " ## #"],
        'R' => ["#### ", "#   #", "#### ", "#  # ", "#   #"],
        'S' => [" ####", "#    ", " ### ", "    #", "#### "],
        'T' => ["#####", "  #  ", "  #  ", "  #  ", "  #  "],
        'U' => ["#   #", "#   #", "#   #", "#   #", " ### "],
        'V' => ["#   #", "#   #", "#   #", " # # ", "  #  "],
        'W' => ["#   #", "#   #", "# # #", "## ##", "#   #"],
        'X' => ["#   #", " # # ", "  #  ", " # # ", "#   #"],
        'Y' => ["#   #", " # # ", "  #  ", "  #  ", "  #  "],
        'Z' => ["#####", "   # ", "  #  ", " #   ", "#####"],
        '0' => [" ### ", "#  ##", "# # #", "##  #", " ### "],
        '1' => ["  #  ", " ##  ", "  #  ", "  #  ", " ### "],
        '2' => [" ### ", "#   #", "  ## ", " #   ", "#####"],
        '3' => ["#### ", "    #", " ### ", "    #", "#### "],
        '4' => ["#   #", "#   #", "#####", "    #", "    #"],
        '5' => ["#####", "#    ", "#### ", "    #", "#### "],
        '6' => [" ### ", "#    ", "#### ", "#   #", " ### "],
        '7' => ["#####", "    #", "   # ", "  #  ", "  #  "],
        '8' => [" ### ", "#   #", " ### ", "#   #", " ### "],
        '9' => [" ### ", "#   #", " ####", "    #", " ### "],
        _ => ["     ", " ### ", "#   #", "  ## ", "  #  "],
    }
}

/// The rows of `text` in block letters, glyphs one column apart.
pub fn render(text: &str) -> [String; HEIGHT] {
    let mut rows: [String; HEIGHT] = Default::default();
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, line) in rows.iter_mut().zip(g) {
            if i > 0 {
                row.push(' ');
            }
            row.extend(line.chars().map(|p| if p == '#' { '█' } else { ' ' }));
        }
    }
    rows
}

/// Width of `text` rendered by [`render`].
pub fn width(text: &str) -> usize {
    let n = text.chars().count();
    if n == 0 { 0 } else { n * (WIDTH + 1) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_whole_sas_alphabet() {
        for c in "ybndrfg8ejkmcpqxot1uwisza345h769".chars() {
            let g = glyph(c);
            assert!(g.iter().all(|r| r.len() == WIDTH), "{c}");
            assert_ne!(g, glyph('?'), "{c} has a glyph");
        }
        let rows = render("9aep");
        assert!(rows.iter().all(|r| r.chars().count() == width("9aep")));
        assert_eq!(rows[0], " ███   ███  █████ ████ ");
    }
}
