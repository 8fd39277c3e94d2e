#!/usr/bin/env python3
"""Point references to the former internal notes at the documents inside the repository.

The code used to cite three notes that never lived in this repository (``attention.md``,
``studies.md`` and ``architecture.md``, sometimes spelled with a ``shared/specs/`` prefix). Their
content is now written up in-repo, with the same section numbers:

  attention.md §X      -> models/attention/README.md §X        (every X: §0 ... §8.2)
  studies.md §1.x      -> experiments/icl_regression/README.md §1.x   (He et al.)
  studies.md §2.x      -> experiments/icl_garg/README.md §2.x         (Garg et al.)
  studies.md §3.x      -> experiments/lm_ablation/README.md §3.x      (LM corpora and ablation)
  studies.md §4.x, §5  -> experiments/README.md §4.x, §5              (variant experiments, reports)
  architecture.md      -> README.md                                   (layout, CLI, training)

A ``studies.md`` without a section number goes to the study of the folder the file is in
(experiments/<study>/...), otherwise to the study its other references name most often,
otherwise to experiments/icl_regression/README.md. Inside a study README a reference to that
same README becomes a bare "§1.5" (or "the Protocol section" when it had no number). In a list
such as "studies.md §1.1, §1.8, §2.1" an item of another study gets that study's path.

Usage:  python3 tools/rewrite_spec_refs.py [REPO_ROOT] [--dry-run]

Rewrites every git-tracked .py/.md/.sh/.txt/.toml/.cfg/.yaml/.yml/.rst file, Makefile and
extension-less script (shebang) under REPO_ROOT (default: the current directory), prints the
number of references rewritten per file, and exits 1 if any reference to the outside notes is
left afterwards (listing file:line), else 0. Running it twice changes nothing the second time.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys

ATTENTION_DOC = "models/attention/README.md"
STUDY_DOCS = {
    "1": "experiments/icl_regression/README.md",
    "2": "experiments/icl_garg/README.md",
    "3": "experiments/lm_ablation/README.md",
    "4": "experiments/README.md",
    "5": "experiments/README.md",
}
DEFAULT_STUDY = "1"
ARCHITECTURE_DOC = "README.md"
STUDY_DIRS = {"icl_regression": "1", "icl_garg": "2", "lm_ablation": "3"}

EXTENSIONS = (".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".yaml", ".yml", ".rst")
SELF = os.path.join("tools", "rewrite_spec_refs.py")

NUM = r"\d+(?:\.\d+)*"
# One reference: optional backticks and location prefix around the note's name, then optionally
# its first section number, either right after it ("studies.md §1.6", "studies.md, §1.6") or in
# parentheses ("`studies.md` (§1)").
REF = re.compile(
    r"(?<![\w/.\-])"
    r"(?P<open>`?)"
    r"(?:(?:/work/)?shared/specs/)?"
    r"(?P<name>attention|studies|architecture)\.md"
    r"(?P<close>`?)"
    r"(?P<tail>(?P<sep>,?\s?\(?)§(?P<num>" + NUM + r"))?"
)
# Further items of a list that follows a reference: ", §1.8", " and §2.1", "; §3".
LIST_ITEM = re.compile(r"(?P<sep>,\s*|;\s*|\s+and\s+|\s+or\s+)§(?P<num>" + NUM + r")")
# Anything still pointing outside once the rewrite is done.
LEFTOVER = re.compile(r"(?<![\w/.\-])(?:attention|studies|architecture)\.md(?!\w)|shared/specs")


def tracked_files(root: str) -> list[str]:
  try:
    out = subprocess.run(["git", "-C", root, "ls-files", "-z"], check=True,
                         capture_output=True).stdout.decode()
    paths = [p for p in out.split("\0") if p]
  except (OSError, subprocess.CalledProcessError):
    paths = []
    for d, dirs, files in os.walk(root):
      dirs[:] = [x for x in dirs if x not in (".git", ".venv", "node_modules", "__pycache__")]
      paths += [os.path.relpath(os.path.join(d, f), root) for f in files]
  keep = []
  for p in sorted(paths):
    if os.path.normpath(p) == SELF:
      continue
    full = os.path.join(root, p)
    if not os.path.isfile(full) or os.path.islink(full):
      continue
    base = os.path.basename(p)
    if p.endswith(EXTENSIONS) or base == "Makefile":
      keep.append(p)
    elif "." not in base:
      try:
        with open(full, "rb") as f:
          if f.read(2) == b"#!":
            keep.append(p)
      except OSError:
        pass
  return keep


def default_study(path: str, text: str) -> str:
  parts = path.split("/")
  if len(parts) >= 2 and parts[0] == "experiments" and parts[1] in STUDY_DIRS:
    return STUDY_DIRS[parts[1]]
  counts = collections.Counter(m.group("num").split(".")[0] for m in REF.finditer(text)
                               if m.group("name") == "studies" and m.group("num"))
  counts = {k: v for k, v in counts.items() if k in STUDY_DOCS}
  if counts:
    return max(sorted(counts), key=counts.get)
  return DEFAULT_STUDY


def rewrite(path: str, text: str) -> tuple[str, int]:
  """Returns the rewritten text and the number of references rewritten."""
  study = None  # computed lazily
  out, pos, count = [], 0, 0
  for m in REF.finditer(text):
    name, num = m.group("name"), m.group("num")
    if name == "attention":
      target = ATTENTION_DOC
    elif name == "architecture":
      target = ARCHITECTURE_DOC
    else:
      if num and num.split(".")[0] in STUDY_DOCS:
        top = num.split(".")[0]
      else:
        if study is None:
          study = default_study(path, text)
        top = study
      target = STUDY_DOCS[top]
    tail = m.group("tail") or ""
    if target == path:  # a study README citing itself
      if tail and tail.startswith(("§", " §")):
        new = "§" + num
      else:
        new = "the Protocol section" + tail
    else:
      new = m.group("open") + target + m.group("close") + tail
    end = m.end()
    # Items of a list that belong to another document get that document's path.
    if num and name == "studies":
      while True:
        item = LIST_ITEM.match(text, end)
        if not item:
          break
        inum = item.group("num")
        itarget = STUDY_DOCS.get(inum.split(".")[0], target)
        new += item.group("sep") + ("" if itarget == target else itarget + " ") + "§" + inum
        end = item.end()
    out.append(text[pos:m.start()])
    out.append(new)
    pos = end
    count += 1
  out.append(text[pos:])
  new_text = "".join(out)
  # "experiments/x/README.md (experiments/x/README.md §1.7)" -> "experiments/x/README.md (§1.7)"
  new_text = re.sub(r"(?P<p>(?:models|experiments)/[\w/]*README\.md)(?P<s>`?\s*\()(?P=p) §",
                    r"\g<p>\g<s>§", new_text)
  return new_text, count


def main(argv: list[str]) -> int:
  args = [a for a in argv if not a.startswith("--")]
  dry = "--dry-run" in argv
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  root = os.path.abspath(args[0] if args else ".")
  files = tracked_files(root)
  total = 0
  for p in files:
    full = os.path.join(root, p)
    try:
      with open(full, encoding="utf-8") as f:
        text = f.read()
    except (UnicodeDecodeError, OSError):
      continue
    new_text, n = rewrite(p, text)
    if n:
      total += n
      print(f"{n:4d}  {p}")
      if not dry and new_text != text:
        with open(full, "w", encoding="utf-8") as f:
          f.write(new_text)
  print(f"{total} reference(s) rewritten in {root}" + (" (dry run)" if dry else ""))
  left = []
  for p in files:
    try:
      with open(os.path.join(root, p), encoding="utf-8") as f:
        lines = f.read().splitlines()
    except (UnicodeDecodeError, OSError):
      continue
    if dry:
      lines = rewrite(p, "\n".join(lines))[0].splitlines()
    for i, line in enumerate(lines, 1):
      if LEFTOVER.search(line):
        left.append(f"{p}:{i}: {line.strip()}")
  if left:
    print(f"{len(left)} line(s) still point at the outside notes:", file=sys.stderr)
    for line in left:
      print("  " + line, file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
