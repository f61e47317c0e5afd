"""tracking.py: Grace Hopper's photo (matplotlib's) moving across a gray canvas, found by a full
search every k-th frame and followed between; a face lost between full searches; where Haar's box
sits on YuNet's, by hand; and track ids and averaged probabilities of boxes given by hand."""
import numpy as np
import pytest

import faces
import tracking
from config import EMOTION, GENDER, SMILE
from test_faces import MARKED, on_face, photo  # the shipped photos and their faces marked by eye


def moving_clip(frames, step=4):
    """Grace Hopper's photo on a wider gray canvas, moving right `step` px a frame; -> (frames, true x shifts)."""
    picture = photo('grace_hopper')
    clip = []
    for i in range(frames):
        canvas = np.full((600, 800, 3), 120, np.uint8)
        canvas[:, step * i:step * i + picture.shape[1]] = picture
        clip.append(canvas)
    return clip, [step * i for i in range(frames)]


# ----------------------------------------------------------------------------- where: find

def test_find_searches_every_kth_frame_and_follows_the_face_between(monkeypatch):
    clip, shifts = moving_clip(9)
    full_searches, haar_searches = [], []
    detect_yunet, haar_near = faces.detect_yunet, faces._haar_near

    def counted_yunet(picture, *args, **kwargs):
        if picture.shape == clip[0].shape:
            full_searches.append(len(full_searches))
        return detect_yunet(picture, *args, **kwargs)

    def counted_haar(*args, **kwargs):
        haar_searches.append(len(haar_searches))
        return haar_near(*args, **kwargs)
    monkeypatch.setattr(faces, 'detect_yunet', counted_yunet)
    monkeypatch.setattr(faces, '_haar_near', counted_haar)
    tracker = tracking.FaceTracker('yunet', every=4)
    mx, my, side = MARKED['grace_hopper']
    followed = []
    for i, (frame, shift) in enumerate(zip(clip, shifts)):
        boxes = tracker.find(frame)
        assert len(boxes) == 1 and on_face(boxes[0], (mx + shift, my, side), 0.1), (i, boxes)
        followed.append(boxes[0])
    assert len(full_searches) == 3  # frames 0, 4 and 8
    assert len(haar_searches) == 3  # Haar frames the face in the full searches only
    # Between them the box moves with the face (4 px a frame), within YuNet's jitter of a few px,
    # and stays close to the box a full search of that frame draws.
    x, y, w, h = followed[0]
    for i in (1, 2, 3):
        assert faces.box_iou(followed[i], (x + 4 * i, y, w, h)) >= 0.85, (i, followed[i])
        assert faces.box_iou(followed[i], faces.detect_faces(clip[i])[0]) >= 0.85, (i, followed[i])


def test_framing_offset_by_hand():
    framed, snapped = (100, 50, 40, 40), (96, 54, 60, 60)  # centre (120, 70) -> (126, 84), side 40 -> 60
    offset = tracking.framing_offset(framed, snapped)
    assert np.allclose(offset, (6 / 40.0, 14 / 40.0, 1.5))
    assert tracking.with_offset((10, 20, 20, 20), offset, 640, 480) == (8, 22, 30, 30)  # centre (23, 37), side 30
    assert tracking.with_offset((0, 0, 20, 20), offset, 640, 480) == (0, 2, 28, 30)  # centre (13, 17): cut at left
    assert tracking.framing_offset(framed, framed) == (0.0, 0.0, 1.0)


def test_find_keeps_a_lost_face_until_the_next_full_search():
    clip, _ = moving_clip(1)
    blank = np.full_like(clip[0], 120)
    tracker = tracking.FaceTracker('yunet', every=3)
    first = tracker.find(clip[0])
    assert len(first) == 1
    assert tracker.find(blank) == first and tracker.find(blank) == first  # followed frames keep the last box
    assert tracker.find(blank) == []  # the full search finds nothing


def test_a_full_search_every_zeroth_frame_is_refused():
    with pytest.raises(ValueError, match='every'):
        tracking.FaceTracker(every=0)


# ----------------------------------------------------------------------------- which: update

def test_update_matches_boxes_and_averages_the_last_k_frames():
    tracker = tracking.FaceTracker(smooth=2)

    def probs(p_smile):
        return {SMILE: np.array([1 - p_smile, p_smile]), EMOTION: np.full(7, 1 / 7), GENDER: np.array([0.5, 0.5])}

    first = tracker.update([((0, 0, 100, 100), probs(0.2))])
    assert first[0][2] == 1 and first[0][1][SMILE][1] == pytest.approx(0.2)
    # the same face moved a little, and a new face far away
    second = tracker.update([((10, 5, 100, 100), probs(0.6)), ((300, 0, 80, 80), probs(0.9))])
    assert [track for _, _, track in second] == [1, 2]
    assert second[0][1][SMILE][1] == pytest.approx(0.4)   # mean of 0.2 and 0.6
    assert second[1][1][SMILE][1] == pytest.approx(0.9)
    third = tracker.update([((12, 5, 100, 100), probs(1.0))])
    assert third[0][1][SMILE][1] == pytest.approx(0.8)    # smooth=2: only 0.6 and 1.0 remain
