from emg2qwerty_ssm.charset import charset


def test_class_layout():
    cs = charset()
    assert len(cs) == 98 and cs.num_classes == 99 and cs.null_class == 98
    assert cs.key_to_label("a") == 0 and cs.key_to_label("Z") == 51
    assert cs.key_to_label("0") == 52 and cs.key_to_label("~") == 93
    assert [
        cs.key_to_label(k) for k in ("Key.backspace", "Key.enter", "Key.space", "Key.shift")
    ] == [
        94,
        95,
        96,
        97,
    ]


def test_str_to_labels_reference_cases():
    cs = charset()
    assert cs.str_to_labels("\n\r\b\x08") == [95, 95, 94, 94]
    assert cs.str_to_labels("’“”—") == [68, 63, 63, 74]
    assert cs.str_to_labels("ab") == [0, 1]
    assert cs.labels_to_str([97, 33, 4, 96, 94, 95]) == "⇧He ⌫⏎"


def test_clean_str_transliterates_and_drops():
    cs = charset()
    assert cs.clean_str("café ⇥x") == "cafe x"  # é -> e, tab glyph dropped
    assert cs.clean_str("日") == ""  # no single in-set transliteration


def test_normalize_keys():
    cs = charset()
    keys = ["a", "Key.shift_r", " ", "’", "Key.ctrl", "Key.shift", "H", "Key.tab", "Key.alt"]
    assert cs.normalize_keys(keys) == ["a", "Key.space", "'", "Key.shift", "H"]
