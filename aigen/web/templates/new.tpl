% rebase('base', title=title)
<section class="ask-card">
  <h1>Make something new</h1>
  % if message:
  <p class="error" role="alert">{{message}}</p>
  %   if get('hint'):
  <p class="help">{{hint}}</p>
  %   end
  % elif limit_message:
  <p class="error" role="status">{{limit_message}}</p>
  % end
  <form method="post" action="/new" class="ask-form">
    <input type="hidden" name="csrf_token" value="{{csrf}}">
    <label for="ask-prompt">Prompt</label>
    <textarea id="ask-prompt" name="prompt" rows="3" maxlength="4000" required>{{values['prompt']}}</textarea>
    <div class="ask-row">
      <div>
        <label for="ask-images">Images</label>
        <input id="ask-images" name="images" type="number" min="0" max="10" value="{{values['images']}}" required>
      </div>
      <div>
        <label for="ask-image-provider">Made by</label>
        <select id="ask-image-provider" name="image_provider">
          % for p in choices['image']:
          <option value="{{p}}" {{'selected' if values['image_provider'] == p else ''}}>{{p}}</option>
          % end
        </select>
      </div>
      <div>
        <label for="ask-image-size">Size</label>
        <input id="ask-image-size" name="image_size" value="{{values['image_size']}}" maxlength="11" pattern="[0-9]+x[0-9]+">
      </div>
    </div>
    <div class="ask-row">
      <div>
        <label for="ask-videos">Videos</label>
        <input id="ask-videos" name="videos" type="number" min="0" max="10" value="{{values['videos']}}" required>
      </div>
      <div>
        <label for="ask-video-provider">Made by</label>
        <select id="ask-video-provider" name="video_provider">
          % for p in choices['video']:
          <option value="{{p}}" {{'selected' if values['video_provider'] == p else ''}}>{{p}}</option>
          % end
        </select>
      </div>
      <div>
        <label for="ask-video-size">Size</label>
        <input id="ask-video-size" name="video_size" value="{{values['video_size']}}" maxlength="11" pattern="[0-9]+x[0-9]+">
      </div>
    </div>
    <div class="ask-row">
      <div>
        <label for="ask-notify-at">Notify me at</label>
        <input id="ask-notify-at" name="notify_at" value="{{values['notify_at']}}" maxlength="64" placeholder="when ready, or 18:00, +30m">
      </div>
      <div>
        <label for="ask-notify-via">By</label>
        <select id="ask-notify-via" name="notify_via">
          % labels = {'': 'default (desktop)', 'none': 'no notification', 'email': 'email', 'desktop': 'desktop', 'console': 'console'}
          % for v in notify_choices:
          <option value="{{v}}" {{'selected' if values['notify_via'] == v else ''}}>{{labels[v]}}</option>
          % end
        </select>
      </div>
      <div>
        <label for="ask-email">Email</label>
        <input id="ask-email" name="email" type="email" value="{{values['email']}}" maxlength="254" autocomplete="email">
      </div>
    </div>
    <p class="help">Only providers whose keys are set on the server are offered. Times are the server's
      (a clock time, an ISO date-time, or a delay such as +30m).
      % if limits and (limits.running_per_user or limits.assets_per_day):
      Limits per user: {{limits.running_per_user or 'any number'}} in progress at once, {{limits.assets_per_day or 'any number of'}} images and videos a day (you: {{use.running}} in progress, {{use.assets_today}} in the last 24 hours).
      % end
    </p>
    <button type="submit" class="primary">Make it</button>
  </form>
</section>
