"""Write a merged .po file as Odoo and OCA's po-pretty-format do, and list what is left to do.

    python tools/po_tidy.py FILE.po

Drops the strings gone from the code (msgmerge keeps them as ``#~`` obsolete entries), sorts by
msgid (polib wraps at 78), prints the untranslated and fuzzy entries; exit 1 if there are any.
"""

import sys

import polib


def main(path):
    po = polib.pofile(path)
    for entry in po.obsolete_entries():
        po.remove(entry)
    po.sort(key=lambda entry: entry.msgid)
    po.save(path)
    untranslated = [entry.msgid for entry in po if not entry.msgstr]
    fuzzy = [entry.msgid for entry in po if entry.fuzzy]
    print("    %s: %d entries, %d untranslated, %d fuzzy"
          % (path, len(po), len(untranslated), len(fuzzy)))
    for msgid in untranslated:
        print("      untranslated: %r" % msgid)
    for msgid in fuzzy:
        print("      fuzzy: %r" % msgid)
    return 1 if untranslated or fuzzy else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
