import pytest

from imageio_ext.copy import BadExtents, ImageExtent, Step, plan_backup

MiB = 1 << 20
CS = 4 * MiB


def test_zero_slots_merge_and_data_spans_skip_zero_edges():
    ext = [ImageExtent(0, 9 * MiB, True), ImageExtent(9 * MiB, 1 * MiB, False), ImageExtent(10 * MiB, 6 * MiB, True)]
    steps = plan_backup(ext, 16 * MiB, CS)
    assert steps == [
        Step("zero", 0, 8 * MiB),
        Step("data", 8 * MiB, 4 * MiB, 9 * MiB, 10 * MiB),
        Step("zero", 12 * MiB, 4 * MiB),
    ]


def test_short_last_slot_and_clipped_extent():
    size = 10 * MiB + 4096
    ext = [ImageExtent(0, 8 * MiB, True), ImageExtent(8 * MiB, 3 * MiB, False)]  # past the end: clipped
    steps = plan_backup(ext, size, CS)
    assert steps == [Step("zero", 0, 8 * MiB), Step("data", 8 * MiB, size - 8 * MiB, 8 * MiB, size)]


def test_dirty_only_skips_clean_slots_and_reads_only_the_dirty_part_of_a_slot():
    ext = [
        ImageExtent(0, 5 * MiB, False, False),
        ImageExtent(5 * MiB, 64 * 1024, False, True),  # dirty inside slot 1: only it is read
        ImageExtent(5 * MiB + 64 * 1024, 11 * MiB - 64 * 1024, False, False),
        ImageExtent(16 * MiB, 4 * MiB, True, True),  # dirty and zero: recorded as zero, not read
    ]
    steps = plan_backup(ext, 20 * MiB, CS, dirty_only=True)
    k = 64 * 1024
    assert steps == [
        Step("data", 4 * MiB, 4 * MiB, 4 * MiB, 8 * MiB,
             ((4 * MiB, 5 * MiB, "parent"), (5 * MiB, 5 * MiB + k, "read"), (5 * MiB + k, 8 * MiB, "parent"))),
        Step("zero", 16 * MiB, 4 * MiB)]
    assert steps[0].read_length == k and steps[0].reads == [(5 * MiB, k)]


@pytest.mark.parametrize("ext", [
    [ImageExtent(0, MiB, False), ImageExtent(2 * MiB, 2 * MiB, False)],  # gap
    [ImageExtent(0, MiB, False)],  # short
    [ImageExtent(0, 0, False)],
])
def test_extents_that_do_not_tile_the_disk_are_refused(ext):
    with pytest.raises(BadExtents):
        plan_backup(ext, 4 * MiB, CS)


def test_small_chunks_are_read_together_up_to_max_read_never_across_zero_gaps():
    cs = 1 * MiB
    ext = [ImageExtent(0, 6 * MiB, False),  # data: slots 0-5
           ImageExtent(6 * MiB, 512 * 1024, True),  # a zero gap at the start of slot 6
           ImageExtent(6 * MiB + 512 * 1024, 3 * MiB + 512 * 1024, False),  # slots 6-9
           ImageExtent(10 * MiB, 2 * MiB, True)]  # zero slots 10-11
    single = plan_backup(ext, 12 * MiB, cs)
    merged = plan_backup(ext, 12 * MiB, cs, max_read=4 * MiB)
    assert merged == [
        Step("data", 0, 4 * MiB, 0, 4 * MiB),
        Step("data", 4 * MiB, 2 * MiB, 4 * MiB, 6 * MiB),
        Step("data", 6 * MiB, 4 * MiB, 6 * MiB + 512 * 1024, 10 * MiB),  # its own zero head is not read
        Step("zero", 10 * MiB, 2 * MiB),
    ]
    # the same slots and the same bytes, in fewer requests
    assert sum(s.length for s in merged) == sum(s.length for s in single) == 12 * MiB
    assert sum(s.read_length for s in merged) == sum(s.read_length for s in single)
    assert plan_backup(ext, 12 * MiB, cs, max_read=cs) == single


K = 64 * 1024


def _inc(spans, size, parent_size=None, max_read=None):
    """Extents from (start, length, zero, dirty) spans, planned as an incremental."""
    return plan_backup([ImageExtent(*s) for s in spans], size, CS, dirty_only=True, parent_size=parent_size,
                       max_read=max_read)


def test_sub_chunk_write_at_chunk_edges_and_across_two_chunks():
    # dirty: the last cluster of slot 0 and the first of slot 1 (one write across the edge)
    steps = _inc([(0, CS - K, False, False), (CS - K, 2 * K, False, True), (CS + K, 2 * CS - K, False, False)],
                 3 * CS, max_read=16 * MiB)
    assert steps == [
        Step("data", 0, CS, 0, CS, ((0, CS - K, "parent"), (CS - K, CS, "read"))),
        Step("data", CS, CS, CS, 2 * CS, ((CS, CS + K, "read"), (CS + K, 2 * CS, "parent"))),
    ]  # never merged with each other: each slot is patched from its own parent chunk


def test_dirty_ranges_close_together_are_read_in_one_request_and_zeros_are_not_read():
    steps = _inc([(0, K, False, True), (K, K, False, False), (2 * K, K, False, True),  # gap of one cluster
                  (3 * K, 10 * K, True, False), (13 * K, K, False, False), (14 * K, 2 * K, True, True),
                  (16 * K, CS - 16 * K, False, False)], CS)
    assert steps[0].parts == ((0, 3 * K, "read"), (13 * K, 14 * K, "parent"), (16 * K, CS, "parent"))


def test_dirty_slot_whose_clean_part_is_zero_is_read_as_in_a_full_backup():
    steps = _inc([(0, K, False, True), (K, CS - K, True, False)], CS)
    assert steps == [Step("data", 0, CS, 0, K)]


def test_disk_end_not_a_multiple_of_the_chunk_size():
    size = 2 * CS + 3 * K
    steps = _inc([(0, 2 * CS, False, False), (2 * CS, K, False, False), (2 * CS + K, K, False, True),
                  (2 * CS + 2 * K, K, False, False)], size)
    assert steps == [Step("data", 2 * CS, 3 * K, 2 * CS, size,
                          ((2 * CS, 2 * CS + K, "parent"), (2 * CS + K, 2 * CS + 2 * K, "read"),
                           (2 * CS + 2 * K, size, "parent")))]


def test_grown_disk_rereads_the_parents_short_last_slot_even_if_clean():
    # the parent was 1.5 slots; now 3 slots: slot 1 was short in the parent and must be read whole
    steps = _inc([(0, 3 * CS, False, False)], 3 * CS, parent_size=CS + CS // 2)
    assert steps == [Step("data", CS, CS, CS, 2 * CS)]
    # shrunk disk: the new short last slot was a whole one in the parent
    steps = _inc([(0, CS + K, False, False)], CS + K, parent_size=3 * CS)
    assert steps == [Step("data", CS, K, CS, CS + K)]
