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


def test_dirty_only_skips_clean_slots_and_reads_whole_dirty_slot_data():
    ext = [
        ImageExtent(0, 5 * MiB, False, False),
        ImageExtent(5 * MiB, 64 * 1024, False, True),  # dirty inside slot 1: whole slot's data is read
        ImageExtent(5 * MiB + 64 * 1024, 11 * MiB - 64 * 1024, False, False),
        ImageExtent(16 * MiB, 4 * MiB, True, True),  # dirty and zero: recorded as zero, not read
    ]
    steps = plan_backup(ext, 20 * MiB, CS, dirty_only=True)
    assert steps == [Step("data", 4 * MiB, 4 * MiB, 4 * MiB, 8 * MiB), Step("zero", 16 * MiB, 4 * MiB)]


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
