"""Read/process/write coordinators with gpu_specter's interface (``gpu_specter.mpi``), which
desispec's ``main_gpu_specter`` and ``desi_proc`` drive.

- :class:`NoMPIIOCoordinator`: one process does everything.
- :class:`SerialIOCoordinator`: rank 0 reads and writes, every rank of the communicator
  extracts (``work_comm`` is the whole communicator).
- :class:`ParallelIOCoordinator`: rank 0 reads, rank 1 writes, ranks 2.. extract (``work_comm``
  holds them); needs 3 ranks or more.

``read(func, payload)`` returns ``func()`` on the rank that reads for the workers and
``payload`` elsewhere; ``process(func, payload)`` runs ``func()`` on the workers;
``write(func, payload)`` calls ``func(result)`` on the writer with the worker root's result.
"""


class _Coordinator:
    """Rank roles shared by the coordinators (class attributes, as gpu_specter has them)."""

    _read_rank = 0
    _write_rank = 0
    _worker_root = 0

    @classmethod
    def is_reader(cls, rank):
        """Whether ``rank`` reads the input."""
        return rank == cls._read_rank

    @classmethod
    def is_writer(cls, rank):
        """Whether ``rank`` writes the output."""
        return rank == cls._write_rank

    @classmethod
    def is_worker_root(cls, rank):
        """Whether ``rank`` is the first worker (it receives the input, holds the result)."""
        return rank == cls._worker_root

    @classmethod
    def is_worker(cls, rank):
        """Whether ``rank`` extracts."""
        return rank >= cls._worker_root


class NoMPIIOCoordinator(_Coordinator):
    """One process reads, extracts and writes."""

    def __init__(self):
        self.comm = None
        self.rank = 0
        self.size = 1
        self.work_comm = None

    def read(self, func, payload):
        """``func()``."""
        return func()

    def process(self, func, payload):
        """``func()``."""
        return func()

    def write(self, func, payload):
        """``func(payload)``."""
        return func(payload)


class SerialIOCoordinator(_Coordinator):
    """Rank 0 reads and writes; every rank of ``comm`` extracts."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.rank
        self.size = comm.size
        self.work_comm = comm

    def read(self, func, payload):
        """``func()`` on rank 0, ``payload`` elsewhere."""
        return func() if self.is_reader(self.rank) else payload

    def process(self, func, payload):
        """``func()`` on every rank."""
        return func() if self.is_worker(self.rank) else payload

    def write(self, func, payload):
        """``func(payload)`` on rank 0, ``payload`` elsewhere."""
        return func(payload) if self.is_writer(self.rank) else payload


class ParallelIOCoordinator(_Coordinator):
    """Rank 0 reads, rank 1 writes, ranks 2.. extract (``work_comm``)."""

    _read_rank = 0
    _write_rank = 1
    _worker_root = 2

    def __init__(self, comm):
        if comm.size < 3:
            raise ValueError("ParallelIOCoordinator needs at least 3 MPI ranks")
        self.comm = comm
        self.rank = comm.rank
        self.size = comm.size
        group = comm.group.Excl([self._read_rank, self._write_rank])
        # Create_group is collective over the members of the group only.
        self.work_comm = comm.Create_group(group) if self.is_worker(self.rank) else None

    def read(self, func, payload):
        """The reader runs ``func()`` and sends the result to the worker root, which returns
        it; every other rank returns ``payload``."""
        if self.is_reader(self.rank):
            self.comm.send(func(), dest=self._worker_root, tag=1)
            return payload
        if self.is_worker_root(self.rank):
            return self.comm.recv(source=self._read_rank, tag=1)
        return payload

    def process(self, func, payload):
        """``func()`` on the workers, ``payload`` elsewhere."""
        return func() if self.is_worker(self.rank) else payload

    def write(self, func, payload):
        """The worker root sends its ``payload`` to the writer once the writer is ready; the
        writer returns ``func(payload)``; every other rank returns ``payload``."""
        if self.is_worker_root(self.rank):
            self.comm.recv(source=self._write_rank, tag=2)
            self.comm.send(payload, dest=self._write_rank, tag=3)
            return payload
        if self.is_writer(self.rank):
            self.comm.send(None, dest=self._worker_root, tag=2)
            return func(self.comm.recv(source=self._worker_root, tag=3))
        return payload
