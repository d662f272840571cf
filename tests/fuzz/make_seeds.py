"""Write the seed corpora (tests/fuzz/corpus/<target>/): valid small files of each format, made by the
tests' own generators. Run again after a format changes; the files are kept in the repository.

    python -m tests.fuzz.make_seeds [TARGET ...]
"""
import os
import sys

from .targets import TARGETS, corpus_dirs


def main(names):
    for name in names or sorted(TARGETS):
        folder = corpus_dirs(name)[0]
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):
            os.remove(os.path.join(folder, old))
        seeds = TARGETS[name]().seeds()
        for file_name, data in seeds.items():
            with open(os.path.join(folder, file_name), "wb") as f:
                f.write(data)
        print(f"{name}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes in {folder}")


if __name__ == "__main__":
    main(sys.argv[1:])
