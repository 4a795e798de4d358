"""The one shard-numbering rule shared by record and the importers."""

from carla_capture.shard_names import next_shard_number, open_next_shard, shard_paths


def test_numbers_skip_unfinished_and_foreign_files(tmp_path):
    (tmp_path / "Town01-00003.h5").write_bytes(b"")
    (tmp_path / "Town01-00007.h5.partial").write_bytes(b"")
    (tmp_path / "notes.h5").write_bytes(b"")
    assert next_shard_number(tmp_path) == 8
    assert [p.name for p in shard_paths(tmp_path)] == ["Town01-00003.h5"]


def test_two_open_writers_never_share_a_number(tmp_path):
    first = open_next_shard(tmp_path, "Town01")
    second = open_next_shard(tmp_path, "Town01")
    assert (first.path.name, second.path.name) == ("Town01-00001.h5", "Town01-00002.h5")
    first.close()
    second.close()
    assert [p.name for p in shard_paths(tmp_path)] == ["Town01-00001.h5", "Town01-00002.h5"]
