"""Extract one executable from a zip archive (wheel or release zip), atomically.

Usage: extract_member.py ARCHIVE_GLOB MEMBER_SUFFIX DEST
Runs on the Ansible controller; prints the archive member it extracted.
"""

import glob
import os
import shutil
import sys
import zipfile


def main() -> int:
    pattern, suffix, dest = sys.argv[1:4]
    archives = sorted(glob.glob(pattern))
    if len(archives) != 1:
        sys.stderr.write(f"expected exactly one archive matching {pattern}, found {archives}\n")
        return 2
    with zipfile.ZipFile(archives[0]) as archive:
        members = [n for n in archive.namelist() if n == suffix or n.endswith("/" + suffix)]
        if len(members) != 1:
            sys.stderr.write(f"expected one member ending in {suffix}, found {members}\n")
            return 2
        tmp = dest + ".part"
        with archive.open(members[0]) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
    os.chmod(tmp, 0o755)  # noqa: S103 - an executable, root-owned on the host
    os.replace(tmp, dest)
    print(members[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
