# The console image: gunicorn serving console.wsgi:application by default; the same image runs
# the Celery worker and the migrations (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .

# collectstatic only needs the settings to load: the development mode gives it throwaway
# values (a key generated into a directory that is removed in the same layer).
RUN pip install . \
    && DJANGO_DEBUG=1 CONSOLE_VAR_DIR=/tmp/build-var python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-var build ./*.egg-info \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin console \
    && mkdir -p /app/var/media && chown -R console /app/var

# Import the code in /app rather than the copy pip put into site-packages: settings find
# templates/ and staticfiles/ relative to the package (BASE_DIR), and those live in /app.
ENV PYTHONPATH=/app \
    CONSOLE_VAR_DIR=/app/var

USER console
EXPOSE 8000
CMD ["gunicorn", "console.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
