"""The video benchmark: per (method, k, attack), anonymize the clip of
``$FACEANON_DATA/video``, attack every frame for its two people, store the frame rows
(faceanon.benchmark.video). ``pytest bench -k video`` runs only these; the grid
(``--bench-grid``) decides the cases and how much of the clip.
"""


def test_video_privacy(bench_video_case, bench_video):
    people = bench_video.measure(bench_video_case)
    # every gallery person has a row, whatever the attack found
    assert {row["person"] for row in people} == set(bench_video.data()["gallery"])
    if bench_video_case.method == "clear" and bench_video_case.attack == "detect":
        # the original clip must show someone the attacker recognises, else the measurement
        # itself is broken (a wrong gallery, a clip without faces)
        assert any(row["identified_anywhere"] for row in people), people
