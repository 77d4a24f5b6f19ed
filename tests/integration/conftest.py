import pytest

from harness import Services, Stack


@pytest.fixture(scope="session")
def services():
    s = Services()
    yield s
    s.close()


@pytest.fixture
def stack(services, tmp_path):
    st = Stack(services, tmp_path)
    yield st
    problems = st.close()
    assert not problems, "\n".join(problems)
