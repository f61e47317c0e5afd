"""Following faces through a video: where each face is in each frame, and which face is which.

Where: the whole frame is searched (faces.detect_faces' search) every `every`-th frame
(DETECT_EVERY by default); in the frames between, each face is looked for only in a square twice
its size around its last box, shrunk so the face is about FOLLOW_FACE_SIDE pixels (~1 ms a face),
and keeps its last box when it is not found there. A face that enters the picture is found at the
next full search. With YuNet, Haar runs only in the full searches: each face remembers how its Haar
box sat on YuNet's (framing_offset), and the frames between put YuNet's new box in that place
(with_offset), which saves Haar's few ms a face a frame.

Which: a face continues the track whose last box it overlaps most (IoU >= MATCH_IOU, each track
taken once) and its probabilities are averaged over the track's last `smooth` frames
(SMOOTH_FRAMES by default), which steadies the labels; a track missed for more than that many
frames is dropped, so a face the detector loses for a frame or two keeps its history.

Public names:
  SMOOTH_FRAMES, DETECT_EVERY, MATCH_IOU, FOLLOW_FACE_SIDE   the defaults and limits above
  FaceTracker(detector, every=DETECT_EVERY, max_side=None, smooth=SMOOTH_FRAMES)
                                .find(frame) -> [(x, y, w, h)] largest first, as detect_faces returns them
                                .update(found [(box, {task: p})]) -> [(box, {task: mean p}, track id)]
                                .started: tracks ever started (the last track id)
  framing_offset(framed, snapped), with_offset(framed, offset, width, height)
                                where Haar's box sits on YuNet's; a YuNet box put there
"""
import collections

import numpy as np

import faces

SMOOTH_FRAMES = 5     # a tracked face's probabilities are averaged over this many frames
DETECT_EVERY = 5      # streams: a full search every this many frames, faces followed in between (a new face waits <= 4)
MATCH_IOU = 0.3       # a box overlapping a track's last box this much continues the track
FOLLOW_FACE_SIDE = 64  # between full searches a face is looked for around its last box, shrunk to this


class FaceTracker(object):
    """The faces of one video, frame after frame: find(frame) gives their boxes (a full search every
    `every`-th call, each face followed around its last box in between), update(found) the track id of
    each and its probabilities averaged over the track's last `smooth` frames.

    detector and max_side are detect_faces' own.
    """

    def __init__(self, detector=faces.DEFAULT_DETECTOR, every=DETECT_EVERY, max_side=None, smooth=SMOOTH_FRAMES):
        if every < 1:
            raise ValueError('every must be at least 1, got %r' % every)
        self.detector, self.every, self.max_side, self.smooth = detector, every, max_side, smooth
        self.started = 0  # tracks ever started, also the last track id
        self._frames = 0  # frames find has seen
        self._faces = []  # [(box, its framing_offset)] of the last frame, largest first
        self._tracks = []

    # ------------------------------------------------------------------------- where

    def find(self, frame):
        """-> [(x, y, w, h)] of the frame's faces, largest first."""
        if self._frames % self.every == 0:
            if self.detector == 'yunet':
                found = faces.yunet_faces(frame, self.max_side or faces.DETECT_SIDE['yunet'])
                self._faces = [(snapped, framing_offset(framed, snapped)) for snapped, framed in found]
            else:
                self._faces = [(box, None) for box in faces.detect_faces(frame, self.detector, self.max_side)]
        else:
            self._faces = sorted((self._follow(frame, box, offset) for box, offset in self._faces),
                                 key=lambda face: face[0][2] * face[0][3], reverse=True)
        self._frames += 1
        return [box for box, _ in self._faces]

    def _follow(self, frame, box, offset):
        """-> (the face of `box` in this frame: the best-overlapping detection around it, else the box
        itself; offset, kept until the next full search)."""
        height, width = frame.shape[:2]
        x, y, w, h = box
        side = 2 * max(w, h)
        x0, y0 = max(0, x + w // 2 - side // 2), max(0, y + h // 2 - side // 2)
        x1, y1 = min(width, x0 + side), min(height, y0 + side)
        region = frame[y0:y1, x0:x1]
        search_side = max(1, int(round(max(region.shape[:2]) * min(1.0, 2.0 * FOLLOW_FACE_SIDE / side))))
        if self.detector == 'yunet':
            rh, rw = region.shape[:2]
            found = [with_offset(faces.haar_framing(b, rw, rh), offset, rw, rh)
                     for b in faces.detect_yunet(region, search_side)]
        else:
            found = faces.detect_haar(region, max_side=search_side)
        moved = [(bx + x0, by + y0, bw, bh) for bx, by, bw, bh in found]
        best = max(moved, key=lambda b: faces.box_iou(b, box), default=None)
        return (best if best is not None and faces.box_iou(best, box) > 0 else box), offset

    # ------------------------------------------------------------------------- which

    def update(self, found):
        """found [(box, {task: p})] of one frame -> [(box, {task: mean p over the track}, track id)]."""
        pairs = sorted(((faces.box_iou(box, track['box']), i, j) for i, (box, _) in enumerate(found)
                        for j, track in enumerate(self._tracks)), reverse=True)
        matched = {}
        for iou, i, j in pairs:
            if iou < MATCH_IOU:
                break
            if i not in matched and j not in matched.values():
                matched[i] = j
        for j, track in enumerate(self._tracks):
            track['missed'] = 0 if j in matched.values() else track['missed'] + 1
        out = []
        for i, (box, probs) in enumerate(found):
            if i in matched:
                track = self._tracks[matched[i]]
            else:
                self.started += 1
                track = dict(id=self.started, missed=0, history=collections.deque(maxlen=self.smooth))
                self._tracks.append(track)
            track['box'] = box
            track['history'].append(probs)
            out.append((box, {t: np.mean([h[t] for h in track['history']], axis=0) for t in probs}, track['id']))
        self._tracks = [t for t in self._tracks if t['missed'] <= self.smooth]
        return out


def framing_offset(framed, snapped):
    """Where Haar's box `snapped` sits on YuNet's `framed` one: (centre shift x, y in framed's
    sides, side ratio); (0, 0, 1) when Haar found nothing there (snapped is framed)."""
    fx, fy, fw, fh = framed
    sx, sy, sw, sh = snapped
    return ((sx + sw / 2.0 - fx - fw / 2.0) / fw, (sy + sh / 2.0 - fy - fh / 2.0) / fh,
            np.sqrt(sw * sh / float(fw * fh)))


def with_offset(framed, offset, width, height):
    """A YuNet box in Haar's framing moved as framing_offset measured, kept in the picture (width x height)."""
    fx, fy, fw, fh = framed
    dx, dy, ratio = offset
    return faces.square_within(fx + fw / 2.0 + dx * fw, fy + fh / 2.0 + dy * fh, ratio * np.sqrt(fw * fh),
                               width, height)
