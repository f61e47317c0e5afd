"""The synthetic 48x48 faces of the demo data set (prepare_data.make_demo, `prepare_data.py --demo`).

Each face is drawn at 96x96 with OpenCV (background, skin, hair, eyes, brows, mouth, then a small
turn, uneven light and noise) and reduced to 48x48 by faces.preprocess_face. Only the task's own
attribute follows the label: the mouth for smile, brows, eyes and mouth for emotion, the hair for
gender (long hair: female); the others are random, so a head can only succeed by looking at the
right part of the face.

Public names:
  draw_faces(task, labels, rng)   -> uint8 (N,48,48): one face per label, drawn with rng (a numpy RandomState)
"""
import cv2
import numpy as np

from config import EMOTION, SMILE
from faces import preprocess_face

# Expression parts per emotion: brow tilt (+ = inner ends down), brow lift, eye openness, mouth.
_EXPRESSIONS = {
    0: dict(brow_tilt=0.35, brow_lift=-0.05, eye=0.45, mouth='line'),      # angry
    1: dict(brow_tilt=0.15, brow_lift=0.0, eye=0.35, mouth='wave'),        # disgust
    2: dict(brow_tilt=-0.3, brow_lift=0.12, eye=1.0, mouth='wide'),        # fear
    3: dict(brow_tilt=0.0, brow_lift=0.0, eye=0.7, mouth='smile'),         # happy
    4: dict(brow_tilt=-0.35, brow_lift=0.0, eye=0.6, mouth='frown'),       # sad
    5: dict(brow_tilt=0.0, brow_lift=0.18, eye=1.0, mouth='open'),         # surprise
    6: dict(brow_tilt=0.0, brow_lift=0.0, eye=0.7, mouth='line'),          # neutral
}


def _draw_face(rng, long_hair, expression):
    """One synthetic face, 96x96 uint8, drawn at 2x and later reduced to 48x48."""
    s = 96
    bg = rng.uniform(20, 110)
    img = np.full((s, s), bg, np.float32)
    img += np.linspace(-1, 1, s)[None, :] * rng.uniform(-25, 25)  # side lighting on the background
    skin = rng.uniform(130, 220)
    hair = rng.uniform(0, 70)
    cx, cy = 48 + rng.uniform(-3, 3), 50 + rng.uniform(-3, 3)
    fw, fh = rng.uniform(25, 30), rng.uniform(32, 37)
    if long_hair:  # hair falling to the shoulders on both sides of the face
        cv2.ellipse(img, (int(cx), int(cy - 4)), (int(fw + 11), int(fh + 8)), 0, 180, 360, hair, -1)
        cv2.rectangle(img, (int(cx - fw - 11), int(cy - 6)), (int(cx + fw + 11), s), hair, -1)
    cv2.ellipse(img, (int(cx), int(cy)), (int(fw), int(fh)), 0, 0, 360, skin, -1)
    if not long_hair:  # short hair: a cap on top, maybe a beard shadow
        cv2.ellipse(img, (int(cx), int(cy - fh * 0.55)), (int(fw + 2), int(fh * 0.5)), 0, 180, 360, hair, -1)
        if rng.rand() < 0.5:
            cv2.ellipse(img, (int(cx), int(cy + fh * 0.55)), (int(fw * 0.8), int(fh * 0.45)), 0, 0, 180,
                        skin * 0.6, -1)
    ink = skin * rng.uniform(0.15, 0.35)
    e = expression
    eye_y, eye_dx = cy - fh * 0.15, fw * 0.42
    for side in (-1, 1):
        ex = cx + side * eye_dx
        cv2.ellipse(img, (int(ex), int(eye_y)), (6, max(1, int(5 * e['eye']))), 0, 0, 360, 245, -1)
        cv2.circle(img, (int(ex), int(eye_y)), 3, ink, -1)
        brow_y = eye_y - 10 - 25 * e['brow_lift']
        inner = (int(ex - side * 6), int(brow_y + 8 * e['brow_tilt']))
        outer = (int(ex + side * 8), int(brow_y - 8 * e['brow_tilt']))
        cv2.line(img, inner, outer, ink, 3)
    my, mw = cy + fh * 0.5, fw * 0.5
    m = e['mouth']
    if m == 'smile':
        cv2.ellipse(img, (int(cx), int(my - 6)), (int(mw), 10), 0, 10, 170, ink, 3)
    elif m == 'frown':
        cv2.ellipse(img, (int(cx), int(my + 6)), (int(mw * 0.9), 8), 0, 190, 350, ink, 3)
    elif m == 'open':
        cv2.ellipse(img, (int(cx), int(my)), (7, 10), 0, 0, 360, ink, -1)
    elif m == 'wide':
        cv2.ellipse(img, (int(cx), int(my)), (int(mw), 5), 0, 0, 360, ink, -1)
    elif m == 'wave':
        xs = np.linspace(cx - mw, cx + mw, 9)
        pts = np.stack([xs, my + 3 * np.sin(np.linspace(0, 2 * np.pi, 9)) - np.linspace(0, 5, 9)], 1)
        cv2.polylines(img, [pts.astype(np.int32)], False, ink, 3)
    else:
        cv2.line(img, (int(cx - mw * 0.8), int(my)), (int(cx + mw * 0.8), int(my)), ink, 3)
    # Pose: small rotation, scale and shift; then uneven light and sensor noise.
    m_aff = cv2.getRotationMatrix2D((48, 48), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
    m_aff[:, 2] += rng.uniform(-4, 4, 2)
    img = cv2.warpAffine(img, m_aff, (s, s), borderMode=cv2.BORDER_REFLECT)
    img *= 1 + np.linspace(-1, 1, s)[:, None] * rng.uniform(-0.25, 0.25)
    img += rng.normal(0, rng.uniform(3, 12), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_faces(task, labels, rng):
    """Draw one face per label. Only the task's own attribute follows the label; the others are
    random, so a head can only succeed by looking at the right part of the face."""
    faces = []
    for label in labels:
        long_hair = rng.rand() < 0.5
        expression = _EXPRESSIONS[rng.choice([0, 1, 2, 4, 5, 6])]  # anything but a smile
        if task == SMILE:
            expression = _EXPRESSIONS[3] if label == 1 else _EXPRESSIONS[rng.choice([0, 1, 4, 6])]
        elif task == EMOTION:
            expression = _EXPRESSIONS[int(label)]
        else:
            long_hair = label == 0  # female
            expression = _EXPRESSIONS[rng.randint(7)]
        faces.append(preprocess_face(_draw_face(rng, long_hair, expression)))
    return np.stack(faces)
