"""Write the student notebook from the solution notebook, as nbgrader's generate_assignment does.

    python notebooks/make_student.py     # notebooks/practice.ipynb -> notebooks/practice_student.ipynb

As nbgrader 0.9 does: in each cell the lines from one containing `BEGIN SOLUTION` to one containing
`END SOLUTION` become `# YOUR CODE HERE` and `raise NotImplementedError()` at the first line's
indentation (in a markdown cell, `YOUR ANSWER HERE`), a solution cell without such a region becomes
the stub as a whole, outputs are cleared, and check and read-only cells are locked against editing,
solution cells against deletion. The cells' nbgrader metadata (solution, grade, locked, grade_id,
points) is kept, so an instructor can also hand the solution notebook to nbgrader itself.

Public names:
  student_version(nb) -> the student notebook (a new one; nb is left as it was)
  StudentVersionError  a solution region or nbgrader metadata that does not add up (one-line message)
  main(argv=None)
"""
import argparse
import copy
import os
import re
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
SOLUTION = os.path.join(HERE, 'practice.ipynb')
STUDENT = os.path.join(HERE, 'practice_student.ipynb')

BEGIN, END = 'BEGIN SOLUTION', 'END SOLUTION'  # written `### BEGIN SOLUTION` in a code cell
CODE_STUB = '# YOUR CODE HERE\nraise NotImplementedError()'  # nbgrader's stubs
TEXT_STUB = 'YOUR ANSWER HERE'
GRADE_ID = re.compile(r'^[a-zA-Z0-9_\-]+$')


class StudentVersionError(ValueError):
    pass


def _flags(cell):
    meta = cell.metadata.get('nbgrader', {})
    return meta, meta.get('solution', False), meta.get('grade', False), meta.get('locked', False)


def _clear_solution(cell, where):
    """Replace the cell's solution regions by the stub; True if there was one."""
    stub = (CODE_STUB if cell.cell_type == 'code' else TEXT_STUB).split('\n')
    lines, inside, replaced = [], False, False
    for line in cell.source.split('\n'):
        if BEGIN in line:
            if inside:
                raise StudentVersionError('%s: %s inside another solution region' % (where, BEGIN))
            inside = replaced = True
            indent = line[:len(line) - len(line.lstrip())]
            lines += [indent + s for s in stub]
        elif END in line:
            if not inside:
                raise StudentVersionError('%s: %s without a %s before it' % (where, END, BEGIN))
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise StudentVersionError('%s: %s has no %s' % (where, BEGIN, END))
    cell.source = '\n'.join(lines)
    return replaced


def student_version(nb):
    """The student notebook: solution regions replaced by stubs, no outputs, graded cells locked."""
    nb = copy.deepcopy(nb)
    grade_ids = set()
    for i, cell in enumerate(nb.cells):
        where = 'cell %d' % i
        meta, solution, grade, locked = _flags(cell)
        if solution or grade or locked:
            grade_id = meta.get('grade_id', '')
            if not GRADE_ID.match(grade_id) or grade_id in grade_ids:
                raise StudentVersionError('%s: grade_id %r is missing, invalid or used twice' % (where, grade_id))
            grade_ids.add(grade_id)
            where += ' (%s)' % grade_id
        if grade and not isinstance(meta.get('points'), (int, float)):
            raise StudentVersionError('%s: a grade cell needs its points' % where)
        replaced = _clear_solution(cell, where)
        if replaced and not solution:
            raise StudentVersionError('%s: a solution region in a cell not marked as a solution' % where)
        if solution and not replaced:
            cell.source = CODE_STUB if cell.cell_type == 'code' else TEXT_STUB
        if solution:
            cell.metadata['deletable'] = False
        elif grade or locked:
            cell.metadata['deletable'] = False
            cell.metadata['editable'] = False
        if cell.cell_type == 'code':
            cell.outputs = []
            cell.execution_count = None
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--source', default=SOLUTION, help='solution notebook (default: notebooks/practice.ipynb)')
    parser.add_argument('--out', default=STUDENT, help='student notebook to write (default: '
                        'notebooks/practice_student.ipynb)')
    args = parser.parse_args(argv)
    try:
        nb = nbformat.read(args.source, as_version=4)
        student = student_version(nb)
    except (OSError, ValueError) as err:  # nbformat's read and validation errors are ValueErrors
        sys.exit('%s: %s' % (args.source, (str(err).strip().splitlines() or [type(err).__name__])[0]))
    tmp = args.out + '.tmp'
    nbformat.write(student, tmp)
    os.replace(tmp, args.out)  # a failed run leaves the previous student notebook as it was
    print('wrote %s' % args.out)


if __name__ == '__main__':
    main()
