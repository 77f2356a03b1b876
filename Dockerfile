# Image for the migration job and the workers of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV SURVEY_CLASSIFIER_DB=postgresql+psycopg://survey:survey@postgres:5432/survey
ENTRYPOINT ["survey-classifier"]
