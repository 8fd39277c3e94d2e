"""The documents the code cites live in the repository, and every cited section exists.

Two checks over the git-tracked text files:

1. Nothing points at the former internal design notes (the attention, studies and architecture
   notes of the shared specs folder, cited by file name with a section sign), which were never
   part of the repository (the code now cites the in-repo documents); see ``OUTSIDE`` below
   for the exact pattern.
2. Every ``models/attention/README.md §X``, ``experiments/<study>/README.md §X`` and
   ``experiments/README.md §X`` reference (including later items of a list, "§1.2, §1.6")
   names a file that exists and a section heading of that file. Section headings are Markdown
   headings that start with the number after a section sign: ``## §4 ...``, ``### §4.4 ...``.
"""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTENSIONS = (".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".yaml", ".yml", ".rst")

# Spelled in pieces so that this file does not match itself.
_NOTES = "(?:" + "|".join(["atten" + "tion", "stud" + "ies", "archi" + "tecture"]) + r")\.md"
OUTSIDE = re.compile(r"(?<![\w/.\-])" + _NOTES + r"(?!\w)|" + "shared" + "/specs")

NUM = r"\d+(?:\.\d+)*"
DOC = r"(?P<doc>models/attention/README\.md|experiments/(?:[\w\-]+/)?README\.md)"
IN_REPO_REF = re.compile(DOC + r"`?\s?,?\s?\(?§(?P<num>" + NUM + ")")
LIST_ITEM = re.compile(r"(?:,\s*|;\s*|\s+and\s+|\s+or\s+)§(?P<num>" + NUM + ")")
HEADING = re.compile(r"^#{1,6}\s+§(?P<num>" + NUM + r")(?![\d.]*\d)", re.M)


def _tracked_text_files():
  try:
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], check=True,
                         capture_output=True).stdout.decode()
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("not a git checkout")
  files = []
  for p in out.split("\0"):
    if not p:
      continue
    full = os.path.join(ROOT, p)
    if not os.path.isfile(full):  # deleted in the work tree
      continue
    if p.endswith(EXTENSIONS) or os.path.basename(p) == "Makefile":
      try:
        with open(full, encoding="utf-8") as f:
          files.append((p, f.read()))
      except UnicodeDecodeError:
        pass
  return files


def _sections(doc):
  with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
    return {m.group("num") for m in HEADING.finditer(f.read())}


def test_no_reference_to_outside_notes():
  bad = []
  for path, text in _tracked_text_files():
    for i, line in enumerate(text.splitlines(), 1):
      if OUTSIDE.search(line):
        bad.append(f"{path}:{i}: {line.strip()[:120]}")
  assert not bad, (f"{len(bad)} line(s) cite notes that are not in the repository; run "
                   f"`python3 {REWRITER} .` to point them at the in-repo docs:\n"
                   + "\n".join(bad))


def test_cited_sections_exist():
  cache, bad, seen = {}, [], 0
  for path, text in _tracked_text_files():
    for m in IN_REPO_REF.finditer(text):
      nums = [m.group("num")]
      end = m.end()
      while (item := LIST_ITEM.match(text, end)):
        nums.append(item.group("num"))
        end = item.end()
      doc = m.group("doc")
      if doc not in cache:
        cache[doc] = _sections(doc) if os.path.isfile(os.path.join(ROOT, doc)) else None
      line = text.count("\n", 0, m.start()) + 1
      for num in nums:
        seen += 1
        if cache[doc] is None:
          bad.append(f"{path}:{line}: {doc} does not exist")
        elif num not in cache[doc]:
          bad.append(f"{path}:{line}: {doc} has no section §{num}")
  assert not bad, "\n".join(bad)


@pytest.mark.parametrize("doc", ["models/attention/README.md",
                                 "experiments/icl_regression/README.md",
                                 "experiments/icl_garg/README.md",
                                 "experiments/lm_ablation/README.md",
                                 "experiments/README.md"])
def test_section_numbers_unique(doc):
  with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
    nums = [m.group("num") for m in HEADING.finditer(f.read())]
  dup = sorted({n for n in nums if nums.count(n) > 1})
  assert nums and not dup, f"{doc}: duplicate or missing section numbers {dup}"
