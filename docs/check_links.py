"""Check relative links in README.md, benchmarks/README.md and docs/*.md: files exist, #anchors exist
(GitHub heading slugs). Usage: python docs/check_links.py [repo root, default .]"""
import re, sys
from pathlib import Path
ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
PENDING: set = set()   # pages written in other branches
def slug(h):
    h = h.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)          # keep letters, digits, _, -, space
    return h.replace(" ", "-")
def anchors(path):
    out, counts, code = set(), {}, False
    for l in path.read_text(encoding="utf-8").split("\n"):
        if l.startswith("```"): code = not code; continue
        if code: continue
        m = re.match(r"^(#{1,6})\s+(.*)$", l)
        if m:
            text = re.sub(r"`|\*|\[|\]\([^)]*\)", "", m.group(2))
            s = slug(text); n = counts.get(s, 0); counts[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out
bad = 0; pending = set()
files = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
for f in files:
    text = f.read_text(encoding="utf-8")
    text_nocode = re.sub(r"```.*?```", "", text, flags=re.S)
    for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", text_nocode):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target): continue
        path, _, frag = target.partition("#")
        dest = (f.parent / path).resolve() if path else f
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if rel in PENDING: pending.add(rel); continue
            print(f"MISSING FILE {f.relative_to(ROOT)}: {target}"); bad += 1; continue
        if frag:
            if dest.suffix != ".md" or frag not in anchors(dest):
                print(f"MISSING ANCHOR {f.relative_to(ROOT)}: {target}"); bad += 1
print(f"{len(files)} files checked, {bad} broken; pending (other branches): {sorted(pending)}")
sys.exit(1 if bad else 0)
