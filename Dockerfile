# Image for the migration job and the workers of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
# the s3 extra: workers read cutouts, catalogues and mosaic tiles from S3-compatible object stores
RUN pip install --no-cache-dir ".[s3]"
ENV SURVEY_CLASSIFIER_DB=postgresql+psycopg://survey:survey@postgres:5432/survey
ENTRYPOINT ["survey-classifier"]
