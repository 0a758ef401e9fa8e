"""The Spanish translation is complete, well formed and loaded by Odoo.

The terms come from Odoo's own exporter (``TranslationModuleReader``, what ``--i18n-export``
writes into compute_bridge.pot), read from this database and this source tree: a new field, view
label or ``_()`` string without a Spanish msgstr fails here. ``tools/i18n_update.sh`` refreshes
the template and merges it into es.po, listing what is left to translate.
"""

import os
import re
import shutil
import subprocess

import polib

from odoo.modules.module import get_module_path
from odoo.tests import TransactionCase, tagged
from odoo.tools.translate import TranslationModuleReader

from ..rpc import CallOutcome

MODULE = "compute_bridge"
# %s, %(name)s, %(ms).1f, %%, {} and {name}: what Python formats in an Odoo message.
PLACEHOLDER_RE = re.compile(r"%(?:\([^)]+\))?[-#0 +]*\d*(?:\.\d+)?[sdifrx%]|\{[^{}]*\}")


@tagged("post_install", "-at_install")
class TestI18n(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.i18n_dir = os.path.join(get_module_path(MODULE), "i18n")
        cls.es_po_path = os.path.join(cls.i18n_dir, "es.po")
        cls.es_po = polib.pofile(cls.es_po_path)

    def _module_terms(self):
        reader = TranslationModuleReader(self.env.cr, modules=[MODULE])
        return {source for module, _type, _name, _res_id, source, _value, _comments in reader
                if module == MODULE}

    def test_every_term_is_translated(self):
        terms = self._module_terms()
        self.assertTrue(terms, "Odoo's exporter found no term for %s" % MODULE)
        translations = {entry.msgid: entry.msgstr for entry in self.es_po if not entry.obsolete}
        missing = sorted(term for term in terms if not translations.get(term))
        self.assertFalse(
            missing,
            "%d term(s) have no Spanish translation in %s; run tools/i18n_update.sh and "
            "translate them:\n%s" % (len(missing), self.es_po_path, "\n".join(map(repr, missing))),
        )

    def test_no_fuzzy_obsolete_or_broken_entry(self):
        self.assertFalse([e.msgid for e in self.es_po if e.fuzzy], "fuzzy entries in es.po")
        self.assertFalse([e.msgid for e in self.es_po.obsolete_entries()],
                         "obsolete (#~) entries in es.po; run tools/i18n_update.sh")
        self.assertFalse([e.msgid for e in self.es_po if e.msgid_plural],
                         "plural entries: Odoo does not use them")
        for entry in self.es_po:
            with self.subTest(msgid=entry.msgid):
                self.assertTrue(entry.msgstr.strip(), "empty translation")
                self.assertEqual(
                    sorted(PLACEHOLDER_RE.findall(entry.msgstr)),
                    sorted(PLACEHOLDER_RE.findall(entry.msgid)),
                    "the translation must keep every placeholder of the source",
                )
                self.assertEqual(
                    sorted(re.findall(r"</?\w+", entry.msgstr)),
                    sorted(re.findall(r"</?\w+", entry.msgid)),
                    "the translation must keep the source's markup",
                )

    def test_header(self):
        metadata = self.es_po.metadata
        self.assertEqual(metadata.get("Language"), "es")
        self.assertEqual(metadata.get("Content-Type"), "text/plain; charset=UTF-8")
        self.assertEqual(metadata.get("Plural-Forms"), "nplurals=2; plural=(n != 1);")

    def test_msgfmt_check(self):
        msgfmt = shutil.which("msgfmt")
        if not msgfmt:
            self.skipTest("!!! msgfmt (GNU gettext) is not installed: es.po and the template were "
                          "NOT checked with `msgfmt -c`; apt-get install gettext !!!")
        for name in ("es.po", "%s.pot" % MODULE):
            path = os.path.join(self.i18n_dir, name)
            # A template has no Language header by design: -c only for the translation.
            args = [msgfmt, "-o", os.devnull, path]
            if name.endswith(".po"):
                args.insert(1, "-c")
            result = subprocess.run(args, capture_output=True, text=True, check=False)
            self.assertEqual(result.returncode, 0, "msgfmt %s:\n%s" % (name, result.stderr))

    def test_file_is_written_as_odoo_writes_it(self):
        # What OCA's po-pretty-format asks (entries sorted by msgid, polib's wrapping at 78), but
        # a msgstr equal to its msgid ("Suma") is kept: this translation is complete by rule.
        with open(self.es_po_path, encoding="utf-8") as po_file:
            original = po_file.read()
        pretty = polib.pofile(original)
        pretty.sort(key=lambda entry: entry.msgid)
        self.assertEqual(str(pretty), original,
                         "es.po is not sorted/wrapped as Odoo writes it; run tools/i18n_update.sh")

    def test_spanish_is_loaded(self):
        lang = self.env["res.lang"]._activate_lang("es_ES")
        self.assertTrue(lang, "es_ES is not among Odoo's languages")
        self.env["ir.module.module"]._load_module_terms([MODULE], ["es_ES"], overwrite=True)
        env = self.env(context=dict(self.env.context, lang="es_ES"))
        Operation = env["compute.operation"]
        # A model description, a field label, a selection value, a view term and a menu.
        self.assertEqual(env["ir.model"]._get("compute.operation").name, "Operación de cálculo")
        fields = Operation.fields_get(["field_1", "state"], ["string", "selection"])
        self.assertEqual(fields["field_1"]["string"], "Primer valor")
        self.assertEqual(dict(fields["state"]["selection"])["failed"], "Fallido")
        arch = Operation.get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn('string="Operandos"', arch)
        self.assertIn('string="Suma"', arch)
        self.assertEqual(env.ref("%s.compute_bridge_settings_menu" % MODULE).name, "Ajustes")
        # A Python string, with its placeholder filled in.
        notification = Operation._outcomes_notification([CallOutcome(3.0, None, 1.0)])
        self.assertEqual(notification["params"]["message"], "Operación completada 3")
        # English is untouched.
        english = self.env(context=dict(self.env.context, lang="en_US"))["compute.operation"]
        message = english._outcomes_notification([CallOutcome(3.0, None, 1.0)])["params"]["message"]
        self.assertEqual(message, "Operation completed 3")
